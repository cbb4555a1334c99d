"""Drift that does not cry wolf, on the embedded legal demo set: `embedgate pipeline` fine-tunes the tiny model
(which memorises its training queries, as the demo's MiniLM does), builds the drift reference with the queries it
never saw marked held-out, and promotes. Held-out legal queries that even the pipeline never saw, replayed through
the real capture and judged by `embedgate drift`, raise no alarm in 20 windows; another domain is flagged in its
first window. A reference built from the trained queries alone (the behaviour before held-out calibration) is
shown to false-alarm on the same traffic, so the fix cannot silently regress."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from gates.cli import main
from gates.drift_reference import build_reference
from service.drift.capture import DriftCapture
from service.drift.runner import run_drift
from service.drift.settings import DriftSettings
from service.embedder import OnnxEmbedder
from service.registry import Registry

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore")]  # one short pipeline on the tiny model
LEGAL = Path(__file__).resolve().parents[2] / "training" / "data" / "legal_lay"
WINDOW = 40  # rows per window (the pipeline calibrates on pseudo-windows of half its 50 held-out queries)
OTHER_DOMAIN = [f"my {who} has a {symptom}, what {dose} of {drug} should {verb} take?"
                for who in ("child", "baby", "father", "mother", "nurse")
                for symptom, dose, drug, verb in (("fever and a cough", "dose", "paracetamol", "he"),
                                                  ("cold and flu", "tablet", "ibuprofen", "she"),
                                                  ("heart pain", "daily dose", "aspirin", "they"),
                                                  ("kidney infection", "course", "antibiotics", "we"),
                                                  ("high blood pressure", "amount", "medicine", "I"),
                                                  ("sore throat", "injection", "penicillin", "the doctor"),
                                                  ("liver problem", "dose", "drug", "the patient"),
                                                  ("migraine", "tablet", "triptan", "one"))]


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def demo(tmp_path_factory, tiny_model_dir):
    """The demo set with half of its test queries taken out of the data the pipeline sees (they are the unseen
    traffic), run through `embedgate pipeline` once."""
    root = tmp_path_factory.mktemp("drift-held-out")
    data = root / "legal"
    shutil.copytree(LEGAL, data, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    lines = (data / "qrels" / "test.tsv").read_text().splitlines()
    test_ids = sorted({line.split("\t")[0] for line in lines[1:]})
    unseen_ids = set(test_ids[1::2])
    (data / "qrels" / "test.tsv").write_text("\n".join([lines[0]] + [line for line in lines[1:]
                                                                      if line.split("\t")[0] not in unseen_ids]) + "\n")
    texts = {q["_id"]: q["text"] for q in _read(data / "queries.jsonl")}
    trained_ids = {line.split("\t")[0] for line in (data / "qrels" / "train.tsv").read_text().splitlines()[1:]}
    config = root / "pipeline.yaml"
    config.write_text(yaml.safe_dump({
        "base_model": str(tiny_model_dir), "data": {"path": str(data), "type": "ir"},
        "output_dir": str(root / "runs"), "epochs": 4, "batch_size": 16, "learning_rate": 1e-3,
        "matryoshka_dims": [32, 16], "seed": 5, "promotion": {"registry": str(root / "registry")},
    }))
    code = main(["pipeline", str(config), "--set", "run_id=demo"])
    assert code == 0, "the pipeline did not promote; see its output above"
    return {"root": root, "registry": Registry(root / "registry"), "run": root / "runs" / "demo",
            "unseen": [texts[q] for q in sorted(unseen_ids)], "trained": [texts[q] for q in sorted(trained_ids)],
            "visible_test": [texts[q] for q in test_ids if q not in unseen_ids]}


def replay(onnx_dir: Path, settings: DriftSettings, texts: list[str], windows: int, seed: int,
           version: str = "v0001") -> None:
    """Requests of 10 texts drawn from `texts`, embedded at the reference dim and handed to the capture, as the
    service's route does, until `windows` more windows are sealed."""
    embedder, capture, rng = OnnxEmbedder.from_export_dir(onnx_dir), DriftCapture(settings, seed=seed), random.Random(seed)
    vectors = dict(zip(texts, embedder.embed(texts, dimensions=16), strict=True))
    counts = dict(zip(texts, embedder.count_tokens(texts), strict=True))
    for _ in range(windows * WINDOW // 10):
        batch = [rng.choice(texts) for _ in range(10)]
        capture.record(batch, np.stack([vectors[t] for t in batch]), [counts[t] for t in batch],
                       [counts[t] > embedder.max_seq_length for t in batch], version, 16)
    assert capture.wait_idle()
    capture.close()


def test_the_pipeline_marks_the_queries_it_never_trained_on_and_calibrates_on_them(demo):
    reference = json.loads((demo["run"] / "reference" / "reference.json").read_text())
    pipeline = json.loads((demo["run"] / "pipeline.json").read_text())
    stage = next(s for s in pipeline["stages"] if s["name"] == "drift reference")
    # 301 train queries and the 50 test queries the pipeline saw; the 50 visible test queries are held out.
    assert (reference["query_count"], reference["held_out_count"]) == (351, 50)
    assert reference["calibration"]["null_from"] == "held-out queries"
    assert reference["calibration"]["current_rows"] == 25
    assert {name for name, s in reference["calibration"]["signals"].items() if s["in_alarm"]} == {
        "embedding", "retrieval", "novelty"}
    assert stage["detail"]["note"] == ""  # nothing kept out of the alarm
    flags = [json.loads(line).get("held_out") for line in
             (demo["run"] / "reference" / "descriptors.jsonl").read_text().splitlines()]
    assert flags.count(True) == 50 and flags.count(False) == 301


def test_unseen_domain_traffic_never_alarms_and_another_domain_is_flagged_at_once(demo, tmp_path, capsys):
    drift_dir = tmp_path / "drift"
    settings = DriftSettings(dir=drift_dir, sample_rate=1.0, window_rows=WINDOW)
    args = ["drift", "--registry", str(demo["registry"].root), "--drift-dir", str(drift_dir), "--json",
            "--no-snapshots"]
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
    build_reference(run / "onnx", [], corpus, stage, dim=16, held_out_queries=demo["trained"],
                    window_rows=WINDOW)
    registry = Registry(tmp_path / "registry")
    registry.add_version({"reference": stage}, metadata={})
    settings = DriftSettings(dir=tmp_path / "drift", sample_rate=1.0, window_rows=WINDOW)
    replay(run / "onnx", settings, demo["unseen"], windows=20, seed=1)
    result = run_drift(settings, registry.root, write_snapshots=False)
    flagged = [w for w in result.computed if w.drifted]
    assert len(result.computed) == 20 and len(flagged) >= 10, [
        {s.name: round(s.score, 3) for s in w.signals if s.score is not None} for w in result.computed]
