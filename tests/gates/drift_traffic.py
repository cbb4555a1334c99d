"""What the drift tests with the tiny model share: legal and medical traffic, the legal reference every one of them
builds, and the route's hand-over to the capture. The tiny export itself is the `onnx_dir` fixture
(tests/gates/conftest.py)."""

from __future__ import annotations

import random
from pathlib import Path

from service.drift.capture import DriftCapture
from service.drift.reference_builder import ReferenceSummary, build_reference
from service.model.embedder import OnnxEmbedder
from tests.synthetic import FILLER, TOPICS

LEGAL = [word for topic in ("lease", "contract", "court", "insurance") for word in TOPICS[topic]]
MEDICAL = [word for topic in ("heart", "kidney", "child") for word in TOPICS[topic]]
WINDOW = 20


def sentences(words: list[str], count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.sample(words, 3) + rng.sample(FILLER, 2) + rng.sample(words, 2)) for _ in range(count)
    ]


def legal_reference(onnx_dir: Path, out: Path, trained: int = 40) -> ReferenceSummary:
    """The reference promotion would build at dim 16 from legal queries: `trained` the model was trained on
    (this one was not, which does not matter here), 40 documents, and 60 held-out queries that calibrate the
    alarms (docs/drift.md)."""
    return build_reference(
        onnx_dir,
        sentences(LEGAL, trained, seed=1),
        sentences(LEGAL, 40, seed=2),
        out,
        dim=16,
        window_rows=WINDOW,
        splits=10,
        held_out_queries=sentences(LEGAL, 60, seed=11),
    )


def serve(embedder: OnnxEmbedder, capture: DriftCapture, texts: list[str], dim: int = 16) -> None:
    """What the service's route does per request of 10 texts: embed, then hand the result to the capture."""
    for start in range(0, len(texts), 10):
        batch = texts[start : start + 10]
        counts = embedder.count_tokens(batch)
        capture.record(
            batch,
            embedder.embed(batch, dimensions=dim),
            counts,
            [count > embedder.max_seq_length for count in counts],
            "v0001",
            dim,
        )
    assert capture.wait_idle()
