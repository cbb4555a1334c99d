"""Small synthetic training sets for the tiny model: topic words make anchors and positives share meaning."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

TOPICS = {
    "heart": "heart blood pressure pain doctor".split(),
    "kidney": "kidney liver dose drug tablet".split(),
    "lease": "lease tenant landlord rent deposit".split(),
    "contract": "contract clause party agreement breach".split(),
    "insurance": "insurance policy cover coverage claim".split(),
    "court": "court law legal damages liability".split(),
    "child": "child fever cough cold flu".split(),
    "money": "money fee cost pay notice".split(),
}
FILLER = "the a of to in on for and with by at from".split()


def make_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows, seen = [], set()
    topics = list(TOPICS)
    while len(rows) < n:
        topic = TOPICS[topics[len(rows) % len(topics)]]
        anchor = " ".join(rng.sample(topic, 3) + rng.sample(FILLER, 2) + [str(len(rows))])
        positive = " ".join(rng.sample(topic, 4) + rng.sample(FILLER, 3))
        if anchor not in seen:
            seen.add(anchor)
            rows.append((anchor, positive))
    return rows


def write_csv(path: Path, header: list[str], rows) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture()
def pairs_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "pairs.csv", ["anchor", "positive"], make_pairs(160))


@pytest.fixture()
def tiny_ir_dir(tmp_path) -> Path:
    """A BEIR folder: 40 docs over 8 topics, 48 train + 16 test queries, graded qrels."""
    rng = random.Random(1)
    root = tmp_path / "ir"
    (root / "qrels").mkdir(parents=True)
    docs = []
    for t, (name, words) in enumerate(TOPICS.items()):
        for j in range(5):
            docs.append({"_id": f"d{t}-{j}", "title": name, "text": " ".join(rng.sample(words, 4) + rng.sample(FILLER, 4))})
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    queries, qrels = [], {"train": [], "test": []}
    for i in range(64):
        t = i % len(TOPICS)
        words = list(TOPICS.values())[t]
        queries.append({"_id": f"q{i}", "text": " ".join(rng.sample(words, 2) + [f"question {i}"])})
        split = "train" if i < 48 else "test"
        qrels[split].append((f"q{i}", f"d{t}-{i % 5}", 2))
        qrels[split].append((f"q{i}", f"d{t}-{(i + 1) % 5}", 1))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    for split, rows in qrels.items():
        (root / "qrels" / f"{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, d, g in rows))
    return root
