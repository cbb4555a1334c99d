"""General-domain texts for the post-hoc rotation: what a client may send besides the training domain.

The packaged general STS set (training.data.GENERAL_STS, 316 everyday sentences grouped by topic) is split in two
halves by position, so by topic: the first half joins the rotation's PCA sample (its ordering then serves the
domain and everyday text, not the domain alone); the second half is left unseen, so a measurement on it
(benchmarks/forgetting.py) is not a measurement on the fit. Why by topic: a paraphrase of a fitted sentence in the
other half would make that half see its own fit.
"""

from __future__ import annotations

import json
from pathlib import Path


def load_general_texts(path: Path | None = None) -> list[str]:
    """The distinct sentences of an STS table (jsonl rows with sentence1 and sentence2), in file order."""
    from training.data import GENERAL_STS

    path = Path(path or GENERAL_STS)
    texts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row, dict) or not {"sentence1", "sentence2"} <= set(row):
            raise ValueError(
                f"{path}:{number}: expected a JSON object with sentence1 and sentence2, got {line[:80]!r}; "
                "give an STS table in the format of training/data/general_sts/sts.jsonl"
            )
        texts += [str(row["sentence1"]), str(row["sentence2"])]
    return list(dict.fromkeys(texts))


def split_general(texts: list[str]) -> tuple[list[str], list[str]]:
    """(fit half, guard half): the first and the second half of the list, in order."""
    middle = len(texts) // 2
    return list(texts[:middle]), list(texts[middle:])


def rotation_fit_texts(sts_path: Path) -> set[str]:
    """The sentences of `sts_path` that the rotation is fitted on (the fit half of the packaged set, which
    training.finetune.train passes to the rotation): what a general-domain check must leave out to measure unseen text.
    Empty for any other STS table (a user's own set is never fitted on)."""
    from training.data import GENERAL_STS

    if Path(sts_path).resolve() != Path(GENERAL_STS).resolve():
        return set()
    return set(split_general(load_general_texts())[0])
