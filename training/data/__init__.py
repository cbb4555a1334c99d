"""Package data: the embedded default dataset used by `make demo`, and the general-domain STS set every pipeline
scores for the forgetting check (`GENERAL_STS`, general_sts/README.md).

`DEFAULT_DATASET` is a BEIR folder (corpus.jsonl, queries.jsonl, qrels/train.tsv, qrels/test.tsv) of lay-language
legal questions against passages written in professional legal jargon; see legal_lay/README.md.

    from training.data import DEFAULT_DATASET
    from training.data.loading import load_dataset
    data = load_dataset(DEFAULT_DATASET)
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_DATASET = Path(__file__).parent / "legal_lay"
GENERAL_STS = Path(__file__).parent / "general_sts" / "sts.jsonl"
