"""Scored pairs held out from STS training data (sentence1, sentence2, score), for gating on Spearman when there
is no BEIR folder.

    split = hold_out_scored_pairs(load_dataset("sts.csv"), Path("runs/r1/heldout"), fraction=0.2, seed=42)
    split.train_path      # the training pairs (sentence1, sentence2, score), JSONL
    split.eval_path       # the held-out pairs, same columns: the gate's STS eval set (Spearman of cosine vs score)

The split is by sentence: sentences are nodes of one graph, each pair links its two sentences, and whole connected
components go to one side. So no sentence is on both sides, in either column: a model that was trained on a
sentence would score the held-out pairs it appears in better for having seen it. Sentences are compared as the
data gate's leakage check compares texts (case, whitespace, punctuation at the ends ignored). Components are ordered
by a seeded shuffle and taken until the eval side holds `fraction` of the pairs: the same data and seed give the
same split. The split is checked after it is made (`shared_sentences` in split.json must be 0).
"""

from __future__ import annotations

import hashlib
import json
import string
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.data.formats import DatasetType
from training.data.holdout import SPLIT_FILE, text_components
from training.errors import ConfigError

MIN_EVAL_PAIRS = 30  # fewer pairs give a Spearman too noisy to show a gain
MIN_TRAIN_PAIRS = 30
EVAL_FILE, TRAIN_FILE = "eval.jsonl", "train.jsonl"


@dataclass(frozen=True)
class ScoredPairsSplit:
    train_path: Path
    eval_path: Path
    source: str
    seed: int
    fraction: float
    train_pairs: int
    eval_pairs: int
    train_sentences: int
    eval_sentences: int
    shared_sentences: int  # sentences on both sides after the split: 0, or the split is refused
    eval_sentences_sha256: str  # of the sorted held-out sentences: what to compare to prove a split identical
    dataset_type: str = DatasetType.STS.value

    @property
    def eval_data(self) -> Path:
        """What the pipeline evaluates on (an STS table)."""
        return self.eval_path

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "train_path": str(self.train_path),
            "eval_path": str(self.eval_path),
            "method": "by sentence: connected components of sentence1-sentence2 links, seeded shuffle",
        }

    def describe(self) -> str:
        return (
            f"no BEIR folder given: gating on Spearman over {self.eval_pairs} scored pairs held out from the "
            f"training data ({self.source}, {self.fraction:.0%} of {self.train_pairs + self.eval_pairs} pairs, "
            f"seed {self.seed}; no sentence on both sides; split recorded in {self.eval_path.parent / SPLIT_FILE})"
        )


def hold_out_scored_pairs(
    data: Any, out_dir: Path, fraction: float = 0.2, seed: int = 42
) -> ScoredPairsSplit:
    """Split an STS table (training.data.loading.TableDataset) into train pairs and held-out eval pairs in `out_dir`
    (which must not exist). Raises ConfigError when the data cannot give a meaningful split."""
    from training.data.loading import to_hf_dataset

    kind = getattr(data, "dataset_type", None)
    if kind is not DatasetType.STS:
        raise ConfigError(
            f"scored pairs can be held out of an STS table (sentence1, sentence2, score), not "
            f"{getattr(kind, 'value', kind)!r} data"
        )
    if not 0 < fraction < 1:
        raise ConfigError(f"evaluation.holdout_fraction: expected a fraction in (0, 1), got {fraction!r}")
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise ConfigError(f"{out_dir} already exists; a held-out split is written once per run")
    rows = to_hf_dataset(data).to_pandas()
    first = [_key(t) for t in rows["sentence1"].astype(str)]
    second = [_key(t) for t in rows["sentence2"].astype(str)]
    component = text_components(first, second)
    is_eval = np.array(_pick_eval_rows([component[t] for t in first], fraction, seed))
    n_eval = int(is_eval.sum())
    if n_eval < MIN_EVAL_PAIRS or len(rows) - n_eval < MIN_TRAIN_PAIRS:
        raise ConfigError(
            f"{data.source}: holding out {fraction:.0%} of the pairs by sentence gives {n_eval} eval and "
            f"{len(rows) - n_eval} training pairs (at least {MIN_EVAL_PAIRS} and {MIN_TRAIN_PAIRS} needed; pairs "
            f"sharing a sentence stay together); add data, change evaluation.holdout_fraction, or set "
            f"evaluation.data to an eval set (a BEIR folder or an STS table)"
        )
    sides = {
        side: {
            t
            for i, (a, b) in enumerate(zip(first, second, strict=True))
            if is_eval[i] == side
            for t in (a, b)
        }
        for side in (True, False)
    }
    shared = sides[True] & sides[False]
    if shared:  # cannot happen by construction; refuse rather than gate on a leaking split
        raise ConfigError(f"internal error: the held-out split shares {len(shared)} sentences with training")
    out_dir.mkdir(parents=True)
    train_path, eval_path = out_dir / TRAIN_FILE, out_dir / EVAL_FILE
    columns = ["sentence1", "sentence2", "score"]
    rows.loc[~is_eval, columns].to_json(train_path, orient="records", lines=True, force_ascii=False)
    rows.loc[is_eval, columns].to_json(eval_path, orient="records", lines=True, force_ascii=False)
    split = ScoredPairsSplit(
        train_path=train_path,
        eval_path=eval_path,
        source=str(data.source),
        seed=seed,
        fraction=fraction,
        train_pairs=len(rows) - n_eval,
        eval_pairs=n_eval,
        train_sentences=len(sides[False]),
        eval_sentences=len(sides[True]),
        shared_sentences=len(shared),
        eval_sentences_sha256=hashlib.sha256("\n".join(sorted(sides[True])).encode()).hexdigest(),
    )
    (out_dir / SPLIT_FILE).write_text(json.dumps(split.to_dict(), indent=2) + "\n", encoding="utf-8")
    return split


def _key(text: str) -> str:
    """The identity the data gate's leakage check uses: lowercase, collapsed whitespace, no punctuation at the
    ends (gates/data_gate/derived.py; training imports nothing from gates)."""
    return " ".join(text.lower().split()).strip(string.punctuation + string.whitespace)


def _pick_eval_rows(roots: list[str], fraction: float, seed: int) -> list[bool]:
    """Whole components (by their rows' root) until the eval side holds `fraction` of the rows."""
    sizes: dict[str, int] = {}
    for root in roots:
        sizes[root] = sizes.get(root, 0) + 1
    ordered = sorted(sizes)  # sorted first, so the shuffle depends on the data and seed only
    target = fraction * len(roots)
    chosen: set[str] = set()
    taken = 0
    for index in np.random.default_rng(seed).permutation(len(ordered)):
        root = ordered[index]
        if taken + sizes[root] > target and chosen:
            continue  # too big for what is left: try smaller components, keep the fraction close
        chosen.add(root)
        taken += sizes[root]
        if taken >= target:
            break
    return [root in chosen for root in roots]
