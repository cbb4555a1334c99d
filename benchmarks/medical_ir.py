"""Build the second development domain: an IR set in BEIR layout from the Curai medical question pairs.

    python benchmarks/medical_ir.py ../shared/datasets/medical-question-pairs/pairs.csv artifacts/datasets/medical-qp

Queries = question1 (a patient's question); corpus = every question2 (doctor-written rewrites: one similar, one
dissimilar per query, so every query's corpus holds a same-topic distractor); qrels = the label-1 pairs. Split by
query, 80% train / 20% test (seeded), so train and test share no query. Development only: needs ../shared.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from pathlib import Path


def build(pairs_csv: Path, out: Path, test_fraction: float = 0.2, seed: int = 0) -> dict[str, int]:
    rows = list(csv.DictReader(open(pairs_csv, encoding="utf-8")))
    queries = sorted({r["question1"] for r in rows})
    docs = sorted({r["question2"] for r in rows})
    qid = {q: f"q{i}" for i, q in enumerate(queries)}
    did = {d: f"d{i}" for i, d in enumerate(docs)}
    shuffled = queries[:]
    random.Random(seed).shuffle(shuffled)
    test = set(shuffled[: int(len(shuffled) * test_fraction)])
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as handle:
        for d in docs:
            handle.write(json.dumps({"_id": did[d], "title": "", "text": d}) + "\n")
    with open(out / "queries.jsonl", "w", encoding="utf-8") as handle:
        for q in queries:
            handle.write(json.dumps({"_id": qid[q], "text": q}) + "\n")
    counts = {"train": 0, "test": 0}
    for split in ("train", "test"):
        with open(out / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as handle:
            handle.write("query-id\tcorpus-id\tscore\n")
            for r in rows:
                if r["label"] == "1" and (r["question1"] in test) == (split == "test"):
                    handle.write(f"{qid[r['question1']]}\t{did[r['question2']]}\t1\n")
                    counts[split] += 1
    return {"queries": len(queries), "corpus": len(docs), **counts}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs_csv", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    print(build(args.pairs_csv, args.out))
