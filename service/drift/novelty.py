"""The queries behind a novelty alarm: a window's novel rows (nearest reference query below the novelty cutoff,
the same rows the novelty signal counts), most novel first, near-duplicates grouped, each group beside the
reference query nearest to it. Stored with the window's verdict, shown by `embedgate drift` and in the window's
Evidently report, and exported for labelling by `embedgate drift export`.

    found = novel_queries(vectors, texts, reference)       # vectors: the window rows at the reference dim
    found.groups[0].examples, found.groups[0].rows, found.groups[0].nearest_reference_query

Plain numpy: no Evidently, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from service.drift.errors import DriftInputError
from service.drift.signals import NOVELTY_QUANTILE

# Rows at least this close to a group's first (most novel) row join it: paraphrases and repeats of one question.
# MiniLM puts reworded questions at 0.85-0.95 and different questions of one topic at 0.5-0.8.
GROUP_COSINE = 0.9
MAX_GROUPS = 50  # kept per window (the summary stays small); novel_rows / novel_groups count them all
EXAMPLES = 3  # distinct texts shown per group


@dataclass(frozen=True)
class NovelGroup:
    """Near-duplicate novel rows: how many, a few distinct texts, and the reference query nearest to them."""

    rows: int  # window rows in the group, repeats included
    distinct: int  # distinct texts (rows when texts are not kept)
    examples: tuple[str, ...]  # up to EXAMPLES distinct texts, most novel first; () when texts are dropped
    nearest_reference_query: str | None  # nearest to the group's first row; None: a reference without texts
    nearest_reference_cosine: float  # the group's first (most novel) row's cosine to it
    row_ids: tuple[int, ...]  # the rows' positions in the window file, most novel first
    row_scores: tuple[float, ...]  # each row's cosine to its nearest reference query

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class NovelQueries:
    """A window's novel rows. `expected_share`: the share new in-domain traffic shows (the cutoff's quantile)."""

    cutoff: float
    scored_rows: int
    novel_rows: int
    novel_groups: int
    expected_share: float
    texts: str  # "kept", "hashed", "dropped" or "mixed": what the window held
    groups: tuple[NovelGroup, ...]

    @property
    def share(self) -> float:
        return self.novel_rows / self.scored_rows if self.scored_rows else 0.0

    def ranked_row_ids(self) -> list[int]:
        """Every listed row, most novel first across groups (what "top N" of the list means)."""
        scored = [
            (score, row)
            for group in self.groups
            for row, score in zip(group.row_ids, group.row_scores, strict=True)
        ]
        return [row for _, row in sorted(scored)]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "groups": [group.to_dict() for group in self.groups], "share": self.share}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NovelQueries:
        fields = {k: v for k, v in data.items() if k != "share"}
        groups = tuple(
            NovelGroup(**{**g, **{k: tuple(g[k]) for k in ("examples", "row_ids", "row_scores")}})
            for g in data["groups"]
        )
        return cls(**{**fields, "groups": groups})


def novel_queries(
    vectors: np.ndarray,
    texts: Sequence[str | None],
    reference_queries: np.ndarray,
    reference_texts: Sequence[str],
    cutoff: float,
    *,
    row_ids: Sequence[int] | None = None,
    group_cosine: float = GROUP_COSINE,
    max_groups: int = MAX_GROUPS,
) -> NovelQueries:
    """The rows of `vectors` (unit length, at the reference dim) whose nearest reference query is below `cutoff`,
    grouped greedily from the most novel: a row joins the first group whose first row it reaches at
    `group_cosine`, or the same text's group, else starts one. `row_ids`: each row's position in its window."""
    vectors = np.asarray(vectors, dtype=np.float32)
    reference_queries = np.asarray(reference_queries, dtype=np.float32)
    if vectors.ndim != 2 or reference_queries.ndim != 2 or vectors.shape[1] != reference_queries.shape[1]:
        raise DriftInputError(
            f"novel_queries: expected window rows [n, dim] and reference queries [m, dim] of one dim, got "
            f"{vectors.shape} and {reference_queries.shape}"
        )
    if len(texts) != len(vectors):
        raise DriftInputError(
            f"novel_queries: expected one text (or None) per row ({len(vectors)}), got {len(texts)}"
        )
    if reference_texts and len(reference_texts) != len(reference_queries):
        raise DriftInputError(
            f"novel_queries: expected one reference text per reference query ({len(reference_queries)}), got "
            f"{len(reference_texts)}"
        )
    if not 0 < group_cosine <= 1:
        raise DriftInputError(f"group_cosine: expected a cosine in (0, 1], got {group_cosine!r}")
    ids = np.arange(len(vectors)) if row_ids is None else np.asarray(row_ids)
    nearest, best = _nearest(vectors, reference_queries)
    order = [int(i) for i in np.argsort(nearest, kind="stable") if nearest[i] < cutoff]
    members: list[list[int]] = []
    leaders: list[int] = []
    by_text: dict[str, int] = {}
    for row in order:
        text = texts[row]
        group = by_text.get(text) if text is not None else None
        if group is None and leaders:
            similarity = vectors[leaders] @ vectors[row]
            if similarity.max() >= group_cosine:
                group = int(similarity.argmax())
        if group is None:
            group = len(members)
            members.append([])
            leaders.append(row)
        members[group].append(row)
        if text is not None:
            by_text.setdefault(text, group)
    groups = tuple(_group(rows, texts, nearest, best, reference_texts, ids) for rows in members[:max_groups])
    return NovelQueries(
        cutoff=round(float(cutoff), 6),
        scored_rows=len(vectors),
        novel_rows=len(order),
        novel_groups=len(members),
        expected_share=NOVELTY_QUANTILE,
        texts=_texts_kind(texts),
        groups=groups,
    )


def _nearest(
    vectors: np.ndarray, reference: np.ndarray, chunk_rows: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    scores, index = [], []
    for start in range(0, len(vectors), chunk_rows):
        similarity = vectors[start : start + chunk_rows] @ reference.T
        index.append(similarity.argmax(axis=1))
        scores.append(similarity.max(axis=1))
    if not scores:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    return np.concatenate(scores), np.concatenate(index)


def _group(
    rows: list[int],
    texts: Sequence[str | None],
    nearest: np.ndarray,
    best: np.ndarray,
    reference_texts: Sequence[str],
    ids: np.ndarray,
) -> NovelGroup:
    distinct = list(dict.fromkeys(texts[row] for row in rows if texts[row] is not None))
    first = rows[0]
    return NovelGroup(
        rows=len(rows),
        distinct=len(distinct) if distinct else len(rows),
        examples=tuple(distinct[:EXAMPLES]),
        nearest_reference_query=reference_texts[int(best[first])] if reference_texts else None,
        nearest_reference_cosine=round(float(nearest[first]), 4),
        row_ids=tuple(int(ids[row]) for row in rows),
        row_scores=tuple(round(float(nearest[row]), 4) for row in rows),
    )


def _texts_kind(texts: Sequence[str | None]) -> str:
    kinds = {"dropped" if t is None else "hashed" if t.startswith("sha256:") else "kept" for t in texts}
    return kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "kept")


TABLE_GROUPS = 20  # groups shown in a window's report and by `embedgate drift`


def headline(found: NovelQueries) -> str:
    """One line: how many rows are novel, against what new in-domain traffic shows."""
    return (
        f"{found.novel_rows} of {found.scored_rows} rows novel ({found.share:.1%}; new queries of the reference's "
        f"domain: about {found.expected_share:.0%}) in {found.novel_groups} group(s)"
    )


def table_rows(found: NovelQueries, limit: int = TABLE_GROUPS) -> tuple[list[str], list[list[str]], str]:
    """(header, rows, title) of the novel-query table: one row per group, most novel first."""
    header = ["#", "rows", "distinct", "examples (most novel first)", "nearest reference query", "cosine"]
    rows = [
        [
            str(number),
            str(group.rows),
            str(group.distinct),
            " | ".join(group.examples) if group.examples else f"(texts {found.texts})",
            group.nearest_reference_query or "(reference without texts)",
            f"{group.nearest_reference_cosine:.3f}",
        ]
        for number, group in enumerate(found.groups[:limit], start=1)
    ]
    return header, rows, f"Novel queries: {headline(found)}"
