"""Small synthetic datasets for the tiny model: topic words make anchors and positives share meaning."""

from __future__ import annotations

import csv
import random
from pathlib import Path

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


# Lay words in queries, jargon in documents: the tiny model starts with no link between them (vocabulary
# mismatch, as in the demo set), so fine-tuning has something clear to learn.
LAY_JARGON = {
    "heart": ("heart pain doctor", "blood pressure hospital"),
    "kidney": ("kidney tablet drug", "liver dose medicine"),
    "lease": ("rent landlord deposit", "lease tenant notice"),
    "contract": ("agreement party breach", "contract clause liability"),
    "insurance": ("insurance cover claim", "policy coverage damages"),
    "court": ("court law legal", "indemnify hold harmless"),
    "child": ("child fever cough", "cold flu nurse"),
    "money": ("money pay fee", "cost year month"),
}


def write_lay_jargon_beir(
    root: Path, train_queries: int = 160, test_queries: int = 48, seed: int = 3
) -> Path:
    """A BEIR folder: 5 jargon documents per topic; lay queries judged against 2 of them (grades 2 and 1)."""
    import json

    rng = random.Random(seed)
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    docs = []
    for topic, (_, jargon) in LAY_JARGON.items():
        for j in range(5):
            words = jargon.split() * 2
            rng.shuffle(words)
            docs.append({"_id": f"{topic}-{j}", "title": "", "text": " ".join(words + rng.sample(FILLER, 3))})
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    queries, qrels, seen = [], {"train": [], "test": []}, set()
    topics = list(LAY_JARGON)
    i = 0
    while len(queries) < train_queries + test_queries:
        topic = topics[i % len(topics)]
        lay = LAY_JARGON[topic][0].split()
        text = " ".join(rng.sample(lay, 2) + rng.sample(FILLER, 3))
        i += 1
        if text in seen:
            continue
        seen.add(text)
        qid = f"q{len(queries)}"
        queries.append({"_id": qid, "text": text})
        split = "train" if len(queries) <= train_queries else "test"
        first = rng.randrange(5)
        qrels[split] += [(qid, f"{topic}-{first}", 2), (qid, f"{topic}-{(first + 1) % 5}", 1)]
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    for split, rows in qrels.items():
        (root / "qrels" / f"{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, d, g in rows)
        )
    return root


def write_untrained_run(run: Path, model_dir: Path, data: Path, dims=(32, 16), int8: bool = True) -> Path:
    """A run directory whose 'fine-tuned' model is `model_dir` itself, exported: what evaluate/gate/report read."""
    import shutil

    import yaml

    from training.export.export_run import export_run

    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        yaml.safe_dump({"base_model": str(model_dir), "data": {"path": str(data)}})
    )
    shutil.copytree(model_dir, run / "model")
    export_run(run / "model", run / "onnx", dims=list(dims), int8=int8)
    return run


def tiny_pipeline_config(base_model: Path, data: Path, root: Path) -> dict:
    """The short pipeline the tiny-model tests run: 4 epochs on a BEIR folder, Matryoshka 32/16, a registry in root."""
    return {
        "base_model": str(base_model),
        "data": {"path": str(data), "type": "ir"},
        "output_dir": str(root / "runs"),
        "epochs": 4,
        "batch_size": 16,
        "learning_rate": 1e-3,
        "matryoshka_dims": [32, 16],
        "seed": 5,
        "promotion": {"registry": str(root / "registry")},
    }
