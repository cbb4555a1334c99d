"""Turn a loaded dataset into what the trainer needs: training rows in loss column order, a held-out dev set for
evaluation during training, the candidate corpus for mining, and every labelled positive per anchor.

The dev set is held out *by anchor* (all rows of an anchor go to one side), so best-checkpoint selection never
sees a training query; it is never the test split, which belongs to the gate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from training.data.beir import IRDataset
from training.data.formats import DatasetType, negative_columns
from training.data.loading import TableDataset, dataset_type_of, to_hf_dataset
from training.errors import DataFormatError
from training.mining.contradiction import nli_triplets

# Dev corpus = the dev queries' positives + up to this many other texts, i.e. the whole corpus of any set we have:
# the test ranks against the whole corpus, and against a few hundred distractors small dims looked fine on dev
# while they lost on test. Same cap as the rotation's decision (training/matryoshka/rotation.py MAX_CORPUS_TEXTS).
DEV_DISTRACTORS = 10000
MAX_DEV_ANCHORS = 200
# The dev set is sized from the data: dev_fraction of the anchors, but at least MIN_DEV_QUERIES (a 10% split of a
# few hundred queries is 30-40, too few for a dev gain to mean anything), never more than MAX_DEV_SHARE of them.
MIN_DEV_QUERIES = 50
MAX_DEV_SHARE = 0.25


def dev_size(n: int, fraction: float) -> int:
    """How many of `n` anchors (or STS pairs) to hold out: `fraction`, raised towards MIN_DEV_QUERIES on small sets."""
    if fraction <= 0:
        return 0
    return min(MAX_DEV_ANCHORS, max(int(n * fraction), min(MIN_DEV_QUERIES, int(n * MAX_DEV_SHARE))))


@dataclass
class TrainingData:
    dataset_type: DatasetType
    train: object  # datasets.Dataset in loss column order
    dev: dict | None  # {"queries": [...], "corpus": [...], "relevant": [set[int]]} or STS/triplet dev rows
    corpus: list[str]  # candidate texts for mining
    labelled: dict[str, set[str]] = field(default_factory=dict)  # anchor -> every labelled positive
    notes: list[str] = field(default_factory=list)

    @property
    def pair_like(self) -> bool:
        return {"anchor", "positive"} <= set(self.train.column_names)

    @property
    def needs_negatives(self) -> bool:
        """(anchor, positive) rows only: in-batch negatives alone, so mining adds hard ones."""
        return set(self.train.column_names) == {"anchor", "positive"}


def prepare_training_data(
    data: TableDataset | IRDataset, split: str = "train", dev_fraction: float = 0.1, seed: int = 42
) -> TrainingData:
    kind = dataset_type_of(data)
    notes: list[str] = []
    corpus: list[str] = []
    labelled: dict[str, set[str]] = {}
    if kind is DatasetType.NLI:
        frame = data.frame
        triplets = nli_triplets(
            frame["premise"].tolist(),
            frame["hypothesis"].tolist(),
            frame["label"].astype(float).astype(int).tolist(),
        )
        rows = triplets.to_hf_dataset()
        notes.append(
            f"NLI -> {len(rows)} (premise, entailment, contradiction) triplets; "
            f"{triplets.premises_without_pair} premises lacked an entailment or a contradiction"
        )
    else:
        rows = to_hf_dataset(data, split=split)
    if len(rows) == 0:
        raise DataFormatError(
            f"no training rows in {getattr(data, 'source', getattr(data, 'root', ''))} "
            f"(split {split!r}); for pairs with a label column, no row has label 1"
        )
    if kind is DatasetType.IR:
        corpus = list(data.doc_texts().values())
        queries = data.query_texts()
        docs = data.doc_texts()
        for name in data.splits:
            for qid, rels in data.split(name).relevant().items():
                if qid in queries:
                    labelled.setdefault(queries[qid], set()).update(docs[d] for d in rels if d in docs)
    if "positive" in rows.column_names:
        negs = [c for c in rows.column_names if c == "negative" or c in negative_columns(rows.column_names)]
        corpus = list(
            dict.fromkeys(corpus + list(rows["positive"]) + [t for c in negs for t in list(rows[c])])
        )
        for a, p in zip(list(rows["anchor"]), list(rows["positive"]), strict=True):
            labelled.setdefault(a, set()).add(p)
    train, dev = _hold_out_dev(rows, kind, corpus, labelled, dev_fraction, seed)
    if dev is not None:
        notes.append(f"held out {dev['size']} {dev['unit']} as the dev set for evaluation during training")
    return TrainingData(kind, train, dev, corpus, labelled, notes)


def _hold_out_dev(rows, kind, corpus, labelled, fraction, seed):
    if fraction <= 0:
        return rows, None
    rng = np.random.default_rng(seed)
    if kind is DatasetType.STS:
        n_dev = max(1, dev_size(len(rows), fraction))
        if len(rows) - n_dev < 2:
            return rows, None
        perm = rng.permutation(len(rows))
        dev = rows.select(sorted(perm[:n_dev]))
        return rows.select(sorted(perm[n_dev:])), {"kind": "sts", "rows": dev, "size": n_dev, "unit": "pairs"}
    anchors = list(dict.fromkeys(list(rows["anchor"])))
    n_dev = dev_size(len(anchors), fraction)
    if n_dev < 5:  # too few to rank anything meaningfully: train on everything, no evaluation during training
        return rows, None
    dev_anchors = set(rng.choice(anchors, size=n_dev, replace=False).tolist())
    is_dev = [a in dev_anchors for a in list(rows["anchor"])]
    train = rows.select([i for i, d in enumerate(is_dev) if not d])
    queries = sorted(dev_anchors)
    positives = sorted({t for a in queries for t in labelled.get(a, ())})
    others = [t for t in corpus if t not in set(positives)]
    if len(others) > DEV_DISTRACTORS:
        others = [others[i] for i in sorted(rng.choice(len(others), DEV_DISTRACTORS, replace=False))]
    dev_corpus = positives + others
    position = {t: i for i, t in enumerate(dev_corpus)}
    # `labelled` already holds every positive of each anchor (dev rows included).
    relevant = [{position[t] for t in labelled.get(a, ()) if t in position} for a in queries]
    return train, {
        "kind": "retrieval",
        "queries": queries,
        "corpus": dev_corpus,
        "relevant": relevant,
        "size": n_dev,
        "unit": "anchors",
    }
