"""Drift that does not cry wolf, on the embedded legal demo set. A word-level tiny BERT is fine-tuned for a few
seconds on the demo's training pairs and memorises them as the demo's MiniLM does (nearest-document cosine of its
training queries 0.82, of unseen ones 0.74; MiniLM after `make demo`: 0.725 and 0.594). The pipeline's own
drift-reference stage builds the reference from the demo config, marking the queries training never saw as
held out. Held-out legal queries that even the reference never saw, replayed through the real capture and judged
by `embedgate drift`, raise no alarm in 20 windows; another domain is flagged in its first window. A reference
built from the trained queries alone (the behaviour before held-out calibration) false-alarms on the same
traffic, so the fix cannot silently regress."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from gates.cli import main
from service.drift.capture import DriftCapture
from service.drift.reference_builder import build_reference
from service.drift.runner import run_drift
from service.drift.settings import DriftSettings
from service.model.embedder import OnnxEmbedder
from service.registry.registry import Registry
from tests.conftest import build_tiny_model

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore")]  # a 50-step fine-tune, ~20 s
LEGAL = Path(__file__).resolve().parents[2] / "training" / "data" / "legal_lay"
WINDOW = 40  # rows per window (the reference calibrates on pseudo-windows of half its 50 held-out queries)
OTHER_DOMAIN = [
    f"my {who} has a {symptom}, what {dose} of {drug} should {verb} take?"
    for who in ("child", "baby", "father", "mother", "nurse")
    for symptom, dose, drug, verb in (
        ("fever and a cough", "dose", "paracetamol", "he"),
        ("cold and flu", "tablet", "ibuprofen", "she"),
        ("heart pain", "daily dose", "aspirin", "they"),
        ("kidney infection", "course", "antibiotics", "we"),
        ("high blood pressure", "amount", "medicine", "I"),
        ("sore throat", "injection", "penicillin", "the doctor"),
        ("liver problem", "dose", "drug", "the patient"),
        ("migraine", "tablet", "triptan", "one"),
    )
]


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _qrels(path: Path) -> list[tuple[str, str, int]]:
    return [(q, d, int(g)) for q, d, g in (line.split("\t") for line in path.read_text().splitlines()[1:])]


def fine_tune(
    target: Path, queries: dict[str, str], docs: dict[str, str], train: list[tuple[str, str, int]]
) -> Path:
    """MNRL on the (training query, grade-2 document) pairs, 5 epochs at a high rate: enough to memorise them."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, losses
    from sentence_transformers.trainer import SentenceTransformerTrainer
    from sentence_transformers.training_args import SentenceTransformerTrainingArguments

    torch.manual_seed(0)
    words = sorted(
        {w for text in [*queries.values(), *docs.values()] for w in re.findall(r"[a-z0-9]+", text.lower())}
    )
    model = SentenceTransformer(str(build_tiny_model(target / "base", words=words)), device="cpu")
    pairs = {q: d for q, d, grade in train if grade == 2}
    data = Dataset.from_dict(
        {"anchor": [queries[q] for q in pairs], "positive": [docs[d] for d in pairs.values()]}
    )
    args = SentenceTransformerTrainingArguments(
        output_dir=str(target / "trainer"),
        num_train_epochs=5,
        per_device_train_batch_size=32,
        learning_rate=2e-3,
        seed=0,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    SentenceTransformerTrainer(
        model=model, args=args, train_dataset=data, loss=losses.MultipleNegativesRankingLoss(model)
    ).train()
    model.save(str(target / "model"), safe_serialization=True)
    return target / "model"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo set with half of its test queries taken out of the data the pipeline sees (they are the unseen
    traffic); a model fine-tuned on its training split; the reference the pipeline's stage builds for it."""
    from gates.pipeline.config import load_pipeline_config
    from gates.pipeline.steps import drift_reference
    from training.export.export_run import export_run
    from training.run_dir import RunPaths

    root = tmp_path_factory.mktemp("drift-held-out")
    data = root / "legal"
    shutil.copytree(LEGAL, data, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    texts = {q["_id"]: q["text"] for q in _read(data / "queries.jsonl")}
    docs = {d["_id"]: f"{d.get('title', '')} {d['text']}".strip() for d in _read(data / "corpus.jsonl")}
    test = _qrels(data / "qrels" / "test.tsv")
    test_ids = sorted({q for q, _, _ in test})
    unseen_ids = set(test_ids[1::2])
    (data / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n"
        + "".join(f"{q}\t{d}\t{g}\n" for q, d, g in test if q not in unseen_ids)
    )
    train = _qrels(data / "qrels" / "train.tsv")
    run = RunPaths(root / "runs" / "demo")
    export_run(fine_tune(root / "train", texts, docs, train), run.onnx, dims=[32, 16], int8=False)
    config = root / "pipeline.yaml"  # the demo's config (gates/demo.yaml) on this copy of its data
    config.write_text(
        yaml.safe_dump(
            {
                "base_model": "all-MiniLM-L6-v2",
                "data": {"path": str(data), "type": "ir"},
                "promotion": {"registry": str(root / "registry")},
            }
        )
    )
    reference, note = drift_reference(load_pipeline_config(config), run)
    registry = Registry(root / "registry")
    registry.add_version({"onnx": run.onnx, "reference": reference}, metadata={})
    trained_ids = sorted({q for q, _, _ in train})
    return {
        "registry": registry,
        "run": run.root,
        "reference": reference,
        "note": note,
        "unseen": [texts[q] for q in sorted(unseen_ids)],
        "trained": [texts[q] for q in trained_ids],
    }


def replay(
    onnx_dir: Path, settings: DriftSettings, texts: list[str], windows: int, seed: int, version: str = "v0001"
) -> None:
    """Requests of 10 texts drawn from `texts`, embedded at the reference dim and handed to the capture, as the
    service's route does, until `windows` more windows are sealed."""
    embedder, capture, rng = (
        OnnxEmbedder.from_export_dir(onnx_dir),
        DriftCapture(settings, seed=seed),
        random.Random(seed),
    )
    vectors = dict(zip(texts, embedder.embed(texts, dimensions=16), strict=True))
    counts = dict(zip(texts, embedder.count_tokens(texts), strict=True))
    for _ in range(windows * WINDOW // 10):
        batch = [rng.choice(texts) for _ in range(10)]
        capture.record(
            batch,
            np.stack([vectors[t] for t in batch]),
            [counts[t] for t in batch],
            [counts[t] > embedder.max_seq_length for t in batch],
            version,
            16,
        )
    assert capture.wait_idle()
    capture.close()


def test_the_pipeline_marks_the_queries_it_never_trained_on_and_calibrates_on_them(demo):
    reference = json.loads((demo["reference"] / "reference.json").read_text())
    # 301 training queries and the 50 test queries the pipeline saw, which are the held-out ones.
    assert (reference["query_count"], reference["held_out_count"], reference["dim"]) == (351, 50, 16)
    assert reference["calibration"]["null_from"] == "held-out queries"
    assert reference["calibration"]["current_rows"] == 25
    assert {name for name, s in reference["calibration"]["signals"].items() if s["in_alarm"]} == {
        "embedding",
        "retrieval",
        "novelty",
    }
    assert demo["note"] == ""  # nothing kept out of the alarm, so the pipeline prints no drift note
    flags = [
        json.loads(line).get("held_out")
        for line in (demo["reference"] / "descriptors.jsonl").read_text().splitlines()
    ]
    assert flags.count(True) == 50 and flags.count(False) == 301  # corpus lines carry no flag


def test_unseen_domain_traffic_never_alarms_and_another_domain_is_flagged_at_once(demo, tmp_path, capsys):
    drift_dir = tmp_path / "drift"
    settings = DriftSettings(dir=drift_dir, sample_rate=1.0, window_rows=WINDOW)
    args = [
        "drift",
        "--registry",
        str(demo["registry"].root),
        "--drift-dir",
        str(drift_dir),
        "--json",
        "--no-snapshots",
    ]
    replay(demo["run"] / "onnx", settings, demo["unseen"], windows=20, seed=1)
    assert main(args) == 0
    same = json.loads(capsys.readouterr().out)
    assert len(same["computed"]) == 20 and not any(w["skipped_reason"] for w in same["computed"])
    assert [w["window_id"] for w in same["computed"] if w["drifted"]] == []
    replay(demo["run"] / "onnx", settings, OTHER_DOMAIN, windows=1, seed=2)
    assert main(args) == 0  # one drifted window is not yet an alert (3 in a row)
    (shifted,) = json.loads(capsys.readouterr().out)["computed"]
    assert shifted["drifted"], shifted["signals"]


def test_a_reference_of_trained_queries_alone_false_alarms_on_the_same_traffic(demo, tmp_path):
    """What promotion stored before held-out calibration: the null and the baselines from queries the model was
    trained on, which it places closer to their documents (and to each other) than any new query."""
    run = demo["run"]
    corpus = [f"{d.get('title', '')} {d['text']}".strip() for d in _read(LEGAL / "corpus.jsonl")]
    stage = tmp_path / "stage" / "reference"
    # The trained queries passed as if held out: every baseline and null comes from them, as before the fix.
    build_reference(
        run / "onnx",
        [],
        corpus,
        stage,
        dim=16,
        held_out_queries=demo["trained"],
        window_rows=WINDOW,
        splits=10,
    )
    registry = Registry(tmp_path / "registry")
    registry.add_version({"reference": stage}, metadata={})
    settings = DriftSettings(dir=tmp_path / "drift", sample_rate=1.0, window_rows=WINDOW)
    replay(run / "onnx", settings, demo["unseen"], windows=20, seed=1)
    result = run_drift(settings, registry.root, write_snapshots=False)
    flagged = [w for w in result.computed if w.drifted]
    assert len(result.computed) == 20 and len(flagged) >= 10, [
        {s.name: round(s.score, 3) for s in w.signals if s.score is not None} for w in result.computed
    ]
