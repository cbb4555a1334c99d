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
