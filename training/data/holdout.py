"""An IR evaluation set held out from the training table itself, for teams that have pairs but no BEIR folder.

    split = hold_out_by_anchor(load_dataset("pairs.csv"), Path("runs/r1/heldout"), fraction=0.2, seed=42)
    split.train_path      # the training rows of the other anchors (same columns, canonical names), JSONL
    split.eval_dir        # BEIR folder: queries = held-out anchors, corpus = every positive and negative,
                          # qrels/test.tsv = each held-out anchor -> its positives

The split is by anchor and leak-free on both sides: anchors and positives are nodes of one graph, each row links
its anchor to its positive, and whole connected components go to one side. So no anchor is on both sides, and no
positive that an anchor of one side maps to is the positive of an anchor of the other side (question-pair data,
where a text is an anchor in one row and a positive in another, is covered too). Components are ordered by a
seeded shuffle and taken until the eval side holds `fraction` of the anchors: the same data and seed give the
same split. Negatives join the corpus (harder ranking) but link nothing.

Hand-written: sentence-transformers and datasets split rows (train_test_split), not groups of rows that share
texts, which would let a held-out positive be trained on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.data.formats import DatasetType
from training.errors import ConfigError

PAIR_LIKE = (DatasetType.PAIRS, DatasetType.TRIPLETS, DatasetType.HARD_NEGATIVES)
MIN_EVAL_ANCHORS = 10  # fewer queries cannot show a significant gain
SPLIT_FILE = "split.json"


@dataclass(frozen=True)
class HeldOutSplit:
    train_path: Path
    eval_dir: Path
    source: str
    dataset_type: str
    seed: int
    fraction: float
    train_anchors: int
    eval_anchors: int
    train_rows: int
    corpus_docs: int
    eval_anchors_sha256: (
        str  # of the sorted held-out anchor texts: what to compare to prove a split identical
    )

    @property
    def eval_data(self) -> Path:
        """What the pipeline evaluates on (a BEIR folder)."""
        return self.eval_dir

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "train_path": str(self.train_path),
            "eval_dir": str(self.eval_dir),
            "method": "by anchor: connected components of anchor-positive links, seeded shuffle",
        }

    def describe(self) -> str:
        return (
            f"no BEIR folder given: gating on {self.eval_anchors} anchors held out from the training data "
            f"({self.source}, {self.fraction:.0%} of {self.train_anchors + self.eval_anchors} anchors, seed "
            f"{self.seed}; corpus {self.corpus_docs} positives and negatives; split recorded in "
            f"{self.eval_dir.parent / SPLIT_FILE})"
        )


def hold_out_by_anchor(data: Any, out_dir: Path, fraction: float = 0.2, seed: int = 42) -> HeldOutSplit:
    """Split a pair-like table (training.data.loading.TableDataset) into train rows and a BEIR eval folder in
    `out_dir` (which must not exist). Raises ConfigError when the data cannot give a meaningful split."""
    from training.data.loading import to_hf_dataset

    kind = getattr(data, "dataset_type", None)
    if kind not in PAIR_LIKE:
        raise ConfigError(
            f"a held-out evaluation can be built from pairs, triplets or hard-negative tables, not "
            f"{getattr(kind, 'value', kind)!r} data; set evaluation.data to a BEIR folder (e.g. "
            f"SciFact) with judged test queries"
        )
    if not 0 < fraction < 1:
        raise ConfigError(f"evaluation.holdout_fraction: expected a fraction in (0, 1), got {fraction!r}")
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise ConfigError(f"{out_dir} already exists; a held-out split is written once per run")
    rows = to_hf_dataset(data).to_pandas()
    anchors, positives = rows["anchor"].astype(str).tolist(), rows["positive"].astype(str).tolist()
    component = text_components(anchors, positives)
    eval_anchors = _pick_eval_anchors(anchors, component, fraction, seed)
    unique_anchors = len(set(anchors))
    if len(eval_anchors) < MIN_EVAL_ANCHORS or unique_anchors - len(eval_anchors) < MIN_EVAL_ANCHORS:
        raise ConfigError(
            f"{data.source}: holding out {fraction:.0%} by anchor gives {len(eval_anchors)} eval and "
            f"{unique_anchors - len(eval_anchors)} training anchors (at least {MIN_EVAL_ANCHORS} each "
            f"needed; anchors sharing positives stay together); add data, change "
            f"evaluation.holdout_fraction, or set evaluation.data to a BEIR folder"
        )
    is_eval = rows["anchor"].astype(str).isin(eval_anchors)
    out_dir.mkdir(parents=True)
    train_path = out_dir / "train.jsonl"
    rows[~is_eval].to_json(train_path, orient="records", lines=True, force_ascii=False)
    eval_dir = out_dir / "eval"
    corpus_docs = _write_beir(eval_dir, rows, is_eval)
    split = HeldOutSplit(
        train_path=train_path,
        eval_dir=eval_dir,
        source=str(data.source),
        dataset_type=kind.value,
        seed=seed,
        fraction=fraction,
        train_anchors=unique_anchors - len(eval_anchors),
        eval_anchors=len(eval_anchors),
        train_rows=int((~is_eval).sum()),
        corpus_docs=corpus_docs,
        eval_anchors_sha256=hashlib.sha256("\n".join(sorted(eval_anchors)).encode()).hexdigest(),
    )
    (out_dir / SPLIT_FILE).write_text(json.dumps(split.to_dict(), indent=2) + "\n", encoding="utf-8")
    return split


def text_components(anchors: list[str], positives: list[str]) -> dict[str, str]:
    """Union-find over texts: each row joins its anchor and its positive. -> text -> component root."""
    parent: dict[str, str] = {}

    def find(text: str) -> str:
        parent.setdefault(text, text)
        while parent[text] != text:
            parent[text] = parent[parent[text]]
            text = parent[text]
        return text

    for anchor, positive in zip(anchors, positives, strict=True):
        a, p = find(anchor), find(positive)
        if a != p:
            parent[max(a, p)] = min(a, p)
    return {text: find(text) for text in parent}


def _pick_eval_anchors(anchors: list[str], component: dict[str, str], fraction: float, seed: int) -> set[str]:
    by_component: dict[str, set[str]] = {}
    for anchor in anchors:
        by_component.setdefault(component[anchor], set()).add(anchor)
    roots = sorted(by_component)  # sorted first, so the shuffle depends on the data and seed only
    order = np.random.default_rng(seed).permutation(len(roots))
    target = fraction * sum(len(group) for group in by_component.values())
    chosen: set[str] = set()
    for index in order:
        group = by_component[roots[index]]
        if len(chosen) + len(group) > target and chosen:
            continue  # too big for what is left: try smaller components, keep the fraction close
        chosen |= group
        if len(chosen) >= target:
            break
    return chosen


def _write_beir(eval_dir: Path, rows: Any, is_eval: Any) -> int:
    text_columns = [c for c in rows.columns if c == "positive" or c.startswith("negative")]
    corpus = list(dict.fromkeys(str(t) for c in text_columns for t in rows[c].dropna()))
    doc_id = {text: f"d{i}" for i, text in enumerate(corpus)}
    held = rows[is_eval]
    queries = list(dict.fromkeys(held["anchor"].astype(str)))
    query_id = {text: f"q{i}" for i, text in enumerate(queries)}
    (eval_dir / "qrels").mkdir(parents=True)
    (eval_dir / "corpus.jsonl").write_text(
        "".join(
            json.dumps({"_id": doc_id[t], "title": "", "text": t}, ensure_ascii=False) + "\n" for t in corpus
        ),
        encoding="utf-8",
    )
    (eval_dir / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": query_id[t], "text": t}, ensure_ascii=False) + "\n" for t in queries),
        encoding="utf-8",
    )
    judged = sorted(
        {(query_id[str(a)], doc_id[str(p)]) for a, p in zip(held["anchor"], held["positive"], strict=True)}
    )
    (eval_dir / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in judged), encoding="utf-8"
    )
    return len(corpus)
