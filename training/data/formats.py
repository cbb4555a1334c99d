"""The six dataset types embedgate understands, their canonical columns, and the column-name aliases.

Canonical column order is the order sentence-transformers losses read inputs in (anchor first, then positive,
then negatives; label/score last), so a loaded table can be handed to a loss as is.
"""

from __future__ import annotations

import re
from enum import StrEnum


class DatasetType(StrEnum):
    PAIRS = "pairs"  # (anchor, positive)
    TRIPLETS = "triplets"  # (anchor, positive, negative)
    STS = "sts"  # (sentence1, sentence2, score 0-5)
    NLI = "nli"  # (premise, hypothesis, label 0 entailment / 1 neutral / 2 contradiction)
    IR = "ir"  # BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv (graded)
    HARD_NEGATIVES = "hard_negatives"  # (anchor, positive, negative_1, ..., negative_n)


TABLE_TYPES = (
    DatasetType.PAIRS,
    DatasetType.TRIPLETS,
    DatasetType.STS,
    DatasetType.NLI,
    DatasetType.HARD_NEGATIVES,
)

# Required canonical columns per table type (hard negatives also need >= 1 `negative_<i>` column).
REQUIRED_COLUMNS: dict[DatasetType, tuple[str, ...]] = {
    DatasetType.PAIRS: ("anchor", "positive"),
    DatasetType.TRIPLETS: ("anchor", "positive", "negative"),
    DatasetType.STS: ("sentence1", "sentence2", "score"),
    DatasetType.NLI: ("premise", "hypothesis", "label"),
    DatasetType.HARD_NEGATIVES: ("anchor", "positive"),
}

# Columns that hold text (checked for blanks, length, duplicates); the rest are labels.
TEXT_COLUMNS: dict[DatasetType, tuple[str, ...]] = {
    DatasetType.PAIRS: ("anchor", "positive"),
    DatasetType.TRIPLETS: ("anchor", "positive", "negative"),
    DatasetType.STS: ("sentence1", "sentence2"),
    DatasetType.NLI: ("premise", "hypothesis"),
    DatasetType.HARD_NEGATIVES: ("anchor", "positive"),  # + negative_<i>
}

# Source column names (lower-cased) that map to each canonical column, most specific first.
ALIASES: dict[str, tuple[str, ...]] = {
    "anchor": ("anchor", "query", "question", "question1", "q1", "text1", "sentence_a", "chq", "source"),
    "positive": (
        "positive",
        "pos",
        "question2",
        "q2",
        "text2",
        "sentence_b",
        "faq",
        "target",
        "passage",
        "document",
        "answer",
    ),
    "negative": ("negative", "neg", "hard_negative"),
    "sentence1": ("sentence1", "s1", "text_a", "sentence_1"),
    "sentence2": ("sentence2", "s2", "text_b", "sentence_2"),
    "score": ("score", "similarity", "similarity_score", "relatedness_score", "gold_score"),
    "premise": ("premise",),
    "hypothesis": ("hypothesis",),
    "label": ("label", "gold_label", "labels"),
}

NEGATIVE_COLUMN = re.compile(r"^(?:negative|neg|hard_negative)[_\-]?(\d+)$")

NLI_LABEL_NAMES = {"entailment": 0, "neutral": 1, "contradiction": 2}

# Seed minimum sizes: below them the data gate warns (never fails) and names the minimum.
MINIMUM_SIZES: dict[DatasetType, tuple[int, str]] = {
    DatasetType.PAIRS: (2_000, "pairs"),
    DatasetType.TRIPLETS: (1_000, "triplets"),
    DatasetType.STS: (2_000, "scored pairs"),
    DatasetType.NLI: (10_000, "labelled pairs"),
    DatasetType.HARD_NEGATIVES: (1_000, "rows"),
    DatasetType.IR: (100, "queries with relevance judgements"),
}


def negative_columns(columns) -> list[str]:
    """Canonical `negative_<i>` columns in numeric order."""
    found = [c for c in columns if re.fullmatch(r"negative_\d+", c)]
    return sorted(found, key=lambda c: int(c.rsplit("_", 1)[1]))


def text_columns(dataset_type: DatasetType, columns) -> list[str]:
    cols = list(TEXT_COLUMNS[dataset_type])
    if dataset_type is DatasetType.HARD_NEGATIVES:
        cols += negative_columns(columns)
    return cols


def parse_type(value: str | DatasetType | None) -> DatasetType | None:
    """`--type` value -> DatasetType, accepting a few spellings; a clear error otherwise."""
    if value is None or isinstance(value, DatasetType):
        return value
    key = value.strip().lower().replace("-", "_")
    key = {
        "pair": "pairs",
        "triplet": "triplets",
        "hard_negative": "hard_negatives",
        "hn": "hard_negatives",
        "beir": "ir",
        "retrieval": "ir",
        "ranking": "ir",
    }.get(key, key)
    try:
        return DatasetType(key)
    except ValueError:
        from training.errors import DataFormatError

        allowed = ", ".join(t.value for t in DatasetType)
        raise DataFormatError(f"unknown dataset type {value!r}: expected one of {allowed}") from None
