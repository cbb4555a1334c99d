"""The training pairs a backward map is fitted on: every training query (anchor) with the rows of its positive
documents in one document list. From a BEIR folder's training split (queries, corpus, qrels), or from a table with
anchor and positive columns (pairs, triplets, hard negatives: the negatives join the document list). Never the
evaluation split: the map is judged there."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_DOCUMENTS = 50_000  # documents embedded by both models for the fit (positives always kept)


@dataclass(frozen=True)
class CompatPairs:
    queries: list[str]
    documents: list[str]
    positives: list[set[int]]  # per query: rows of `documents`

    @property
    def n_pairs(self) -> int:
        return sum(len(p) for p in self.positives)


class CompatDataError(ValueError):
    """The training data has no (query, positive document) pairs to fit a backward map on."""


def training_pairs(data: Any, split: str = "train", seed: int = 0) -> CompatPairs:
    """`data`: a loaded dataset (training.data.loading.load_dataset)."""
    import random

    from training.data.beir import IRDataset
    from training.data.formats import negative_columns

    if isinstance(data, IRDataset):
        view = data.split(split)
        relevant = view.relevant()
        query_ids = sorted(q for q in relevant if q in view.queries)
        doc_ids = sorted(view.corpus)  # the evaluation's order: its cached encodings are reused
        if len(doc_ids) > MAX_DOCUMENTS:
            needed = sorted({d for q in query_ids for d in relevant[q] if d in view.corpus})
            rest = sorted(set(view.corpus) - set(needed))
            doc_ids = sorted(needed + random.Random(seed).sample(rest, MAX_DOCUMENTS - len(needed)))
        row = {d: i for i, d in enumerate(doc_ids)}
        positives = [{row[d] for d in relevant[q] if d in row} for q in query_ids]
        return _checked(
            CompatPairs([view.queries[q] for q in query_ids], [view.corpus[d] for d in doc_ids], positives)
        )
    frame = data.frame
    if not {"anchor", "positive"} <= set(frame.columns):
        raise CompatDataError(
            f"{data.source}: a backward-compatible version is fitted on (anchor, positive) pairs; this "
            f"{data.dataset_type.value} table has columns {sorted(frame.columns)}. Use pairs, triplets, hard "
            f"negatives or a BEIR folder, or turn compatibility off (compatibility: off)"
        )
    rows: dict[str, int] = {}
    by_anchor: dict[str, set[int]] = {}
    for record in frame[["anchor", "positive", *negative_columns(frame.columns)]].itertuples(index=False):
        anchor, positive, *negatives = (str(value) for value in record)
        by_anchor.setdefault(anchor, set()).add(rows.setdefault(positive, len(rows)))
        for negative in negatives:
            if negative and negative != "nan":
                rows.setdefault(negative, len(rows))
    anchors = sorted(by_anchor)
    return _checked(CompatPairs(anchors, list(rows), [by_anchor[a] for a in anchors]))


def _checked(pairs: CompatPairs) -> CompatPairs:
    if not pairs.queries or not pairs.n_pairs:
        raise CompatDataError(
            "the training data has no query with a positive document: nothing to fit a backward-compatible "
            "map on; turn compatibility off (compatibility: off) or give judged training queries"
        )
    return pairs
