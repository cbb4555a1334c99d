"""Drift with the tiny model end to end: build_reference embeds through the served runtime, held-out traffic of
the reference's domain replayed through the capture never alarms, another domain does, and `embedgate drift`
exits 0 / 1 / 2 on that."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gates.cli import main
from service.drift.capture import DriftCapture
from service.drift.errors import DriftInputError
from service.drift.reference import load_reference
from service.drift.reference_builder import build_reference
from service.drift.runner import run_drift
from service.drift.settings import DriftSettings
from service.model.embedder import OnnxEmbedder
from service.registry.registry import Registry
from tests.gates.drift_traffic import LEGAL, MEDICAL, WINDOW, legal_reference, sentences, serve

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def promoted(onnx_dir, tmp_path_factory):
    """A registry whose champion carries a reference built from legal queries, as promotion builds it: 40 the
    model was trained on (this one was not, which does not matter here) and 60 held out."""
    root = tmp_path_factory.mktemp("drift-promoted")
    summary = legal_reference(onnx_dir, root / "stage" / "reference")
    registry = Registry(root / "registry")
    registry.add_version({"onnx": onnx_dir, "reference": root / "stage" / "reference"}, metadata={})
    return registry, summary


def test_build_reference_writes_the_served_embeddings_descriptors_and_calibration(onnx_dir, promoted):
    registry, summary = promoted
    assert summary.files == ("queries.npy", "corpus.npy", "descriptors.jsonl", "reference.json")
    assert (
        summary.dim,
        summary.query_count,
        summary.held_out_count,
        summary.corpus_count,
        summary.window_rows,
    ) == (16, 100, 60, 40, WINDOW)
    assert summary.alarm_signals == ("embedding", "retrieval", "novelty") and summary.excluded == {}
    assert summary.thresholds["embedding"] >= 0.55
    reference = load_reference(registry.version_dir("v0001") / "reference")
    expected = OnnxEmbedder.from_export_dir(onnx_dir).embed(
        sentences(LEGAL, 40, seed=1) + sentences(LEGAL, 60, seed=11), dimensions=16
    )
    np.testing.assert_allclose(reference.queries, expected, atol=1e-6)  # the served path, at the served dim
    assert reference.held_out.tolist() == [False] * 40 + [True] * 60
    assert reference.spec.calibration.current_rows == WINDOW and reference.spec.calibration.splits == 10
    assert (
        reference.query_descriptors["tokens"].min() > 2 and len(reference.corpus_descriptors["tokens"]) == 40
    )
    assert reference.spec.calibration.null_from == "held-out queries"
    registry.verify("v0001")  # the reference is covered by the version's manifest


def test_held_out_domain_traffic_never_alarms_and_another_domain_does(onnx_dir, promoted, tmp_path):
    registry, _ = promoted
    settings = DriftSettings(dir=tmp_path / "drift", sample_rate=1.0, window_rows=WINDOW)
    embedder, capture = OnnxEmbedder.from_export_dir(onnx_dir), DriftCapture(settings)
    serve(embedder, capture, sentences(LEGAL, 10 * WINDOW, seed=3))  # held out: not the reference sentences
    same = run_drift(settings, registry.root)
    assert len(same.computed) == 10 and [w.window_id for w in same.computed if w.drifted] == []
    serve(embedder, capture, sentences(MEDICAL, 3 * WINDOW, seed=4))
    capture.close()
    shifted = run_drift(settings, registry.root)
    assert [w.drifted for w in shifted.computed] == [True, True, True] and shifted.alerting


def test_rows_served_at_the_full_dim_are_compared_at_the_reference_dim(onnx_dir, promoted, tmp_path):
    registry, _ = promoted
    settings = DriftSettings(dir=tmp_path / "drift", sample_rate=1.0, window_rows=WINDOW)
    embedder, capture = OnnxEmbedder.from_export_dir(onnx_dir), DriftCapture(settings)
    serve(embedder, capture, sentences(LEGAL, WINDOW, seed=5), dim=32)
    capture.close()
    (window,) = run_drift(settings, registry.root).computed
    assert window.embedding_rows == WINDOW and not window.drifted


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"queries": ["only", "five", "short", "texts", "here"]},
            r"queries \+ held_out_queries: expected at least 20 "
            r"strings in all, got 5 \+ 0",
        ),
        ({"held_out_queries": ["fine", 3]}, r"held_out_queries: entries \[1\] are not non-empty strings"),
        (
            {"held_out_queries": sentences(LEGAL, 30, seed=1)[3:5]},
            r"held_out_queries: entries \[0, 1\] .* are also in "
            r"queries, which the model was trained on",
        ),
        ({"corpus_sample": ["fine", "  "]}, r"corpus_sample: entries \[1\] are not non-empty strings"),
        ({"dim": 24}, r"dim 24 is not served by the export .* served dims: \[32, 16\]"),
        ({"precision": "int8"}, r"precision 'int8' is not in the export"),
    ],
)
def test_build_reference_refuses_bad_inputs(onnx_dir, tmp_path, change, message):
    from service.errors import EmbedgateServiceError

    arguments = {
        "onnx_dir": onnx_dir,
        "queries": sentences(LEGAL, 30, seed=1),
        "corpus_sample": sentences(LEGAL, 5, seed=2),
        "out_dir": tmp_path / "ref",
        "dim": 16,
        **change,
    }
    with pytest.raises(EmbedgateServiceError, match=message):
        build_reference(**arguments)


def test_build_reference_never_writes_into_a_used_folder(onnx_dir, tmp_path):
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "old.txt").write_text("x")
    with pytest.raises(
        DriftInputError, match=r"out_dir .*ref is not empty; build the reference into a new folder"
    ):
        build_reference(onnx_dir, sentences(LEGAL, 30, 1), sentences(LEGAL, 5, 2), tmp_path / "ref", dim=16)


# ---- embedgate drift ----
def test_embedgate_drift_exits_0_then_1_when_the_served_version_alerts(onnx_dir, promoted, tmp_path, capsys):
    registry, _ = promoted
    drift_dir = tmp_path / "drift"
    args = ["drift", "--registry", str(registry.root), "--drift-dir", str(drift_dir)]
    settings = DriftSettings(dir=drift_dir, sample_rate=1.0, window_rows=WINDOW)
    embedder, capture = OnnxEmbedder.from_export_dir(onnx_dir), DriftCapture(settings)
    assert main(args) == 0 and "no judged windows" in capsys.readouterr().out
    serve(embedder, capture, sentences(LEGAL, 2 * WINDOW, seed=6))
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert (
        printed.count("  ok\n") == 2
        and "v0001 (served): 0 drifted window(s) in a row, alert at 3: ok" in printed
    )
    serve(embedder, capture, sentences(MEDICAL, 3 * WINDOW, seed=7))
    capture.close()
    assert main([*args, "--json", "--no-snapshots"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["alerting"] and [w["drifted"] for w in result["computed"]] == [True, True, True]
    assert (
        main([*args, "--list"]) == 1 and "DRIFT" in capsys.readouterr().out
    )  # nothing recomputed, still alerting
    assert main([*args, "--alert-windows", "4", "--list"]) == 0


def test_embedgate_drift_bad_inputs_exit_2_with_one_line(promoted, tmp_path, capsys):
    registry, _ = promoted
    args = ["drift", "--registry", str(registry.root), "--drift-dir", str(tmp_path / "drift")]
    assert main([*args, "--window", "w1", "--all"]) == 2
    assert "--window ['w1'] and --all both choose windows" in capsys.readouterr().err
    assert main([*args, "--window", "w1"]) == 2
    assert "windows ['w1'] are not on disk" in capsys.readouterr().err
    assert main([*args, "--alert-windows", "0"]) == 2


def test_the_serving_runtime_runs_the_drift_monitor_beside_the_capture(onnx_dir, promoted, tmp_path):
    """The wiring in service.runtime: start() starts the monitor on the capture's settings, stop() stops it."""
    import asyncio

    from prometheus_client import CollectorRegistry

    from service.api.metrics import ServiceMetrics
    from service.runtime import ServingRuntime
    from service.settings import ServeSettings

    registry, _ = promoted
    settings = DriftSettings(dir=tmp_path / "drift", sample_rate=1.0, window_rows=WINDOW, interval_s=0.05)
    capture = DriftCapture(settings)
    runtime = ServingRuntime.create(
        ServeSettings(registry=registry.root),
        ServiceMetrics(CollectorRegistry()),
        drift=capture,
        registry_chosen=True,
    )

    async def serve_and_wait():
        await runtime.start()
        try:
            serve(runtime.model.embedder, capture, sentences(MEDICAL, WINDOW, seed=8))
            for _ in range(600):
                if (
                    runtime.drift_monitor.last_result is not None
                    and runtime.drift_monitor.last_result.computed
                ):
                    break
                await asyncio.sleep(0.05)
        finally:
            await runtime.stop()

    asyncio.run(serve_and_wait())
    (window,) = runtime.drift_monitor.last_result.computed
    assert window.drifted and window.model_version == "v0001"
    assert not runtime.drift_monitor.running
    capture_only = DriftCapture(settings.model_copy(update={"monitor": False}))
    quiet = ServingRuntime.create(
        ServeSettings(registry=registry.root),
        ServiceMetrics(CollectorRegistry()),
        drift=capture_only,
        registry_chosen=True,
    )

    async def start_and_stop():
        await quiet.start()
        await quiet.stop()

    asyncio.run(start_and_stop())
    assert quiet.drift_monitor is None  # EMBEDGATE_DRIFT_MONITOR=false: a scheduled `embedgate drift` judges


def test_embedgate_dashboard_without_a_workspace_exits_2_with_the_fix(tmp_path, capsys):
    assert main(["dashboard", "--workspace", str(tmp_path / "nope")]) == 2
    assert "does not exist; it is created when the first drift window is judged" in capsys.readouterr().err


def test_too_few_held_out_queries_keep_signals_out_of_the_alarm_and_the_promotion_says_so(
    onnx_dir, tiny_ir_dir, tmp_path
):
    """The pipeline's reference stage on a set with 16 test queries: every signal is calibrated and reported, none
    can alarm (20 held-out queries needed, 40 for novelty), and the note the pipeline prints and keeps says so."""
    import shutil

    import yaml

    from gates.pipeline.config import load_pipeline_config
    from gates.pipeline.steps import drift_reference
    from training.run_dir import RunPaths

    config_path = tmp_path / "pipeline.yaml"
    config_path.write_text(
        yaml.safe_dump({"base_model": "all-MiniLM-L6-v2", "data": {"path": str(tiny_ir_dir), "type": "ir"}})
    )
    run = RunPaths(tmp_path / "run")
    shutil.copytree(onnx_dir, run.onnx)
    out, note = drift_reference(load_pipeline_config(config_path), run)
    assert note.startswith(
        "drift signal embedding: 16 held-out queries (never trained on), 20 needed to calibrate "
        "embedding on unseen traffic: reported, not in the alarm"
    )
    assert "drift signal novelty: 16 held-out queries (never trained on), 40 needed" in note
    reference = load_reference(out)
    assert (reference.spec.query_count, reference.spec.held_out_count) == (64, 16)
    assert reference.spec.calibration.alarm_signals == ()
    assert reference.spec.calibration.null_from == "reference queries (too few held-out)"
    registry = Registry(tmp_path / "registry")
    registry.add_version({"reference": out}, metadata={})
    settings = DriftSettings(dir=tmp_path / "drift", sample_rate=1.0, window_rows=40)
    embedder, capture = OnnxEmbedder.from_export_dir(onnx_dir), DriftCapture(settings)
    serve(embedder, capture, sentences(MEDICAL, 40, seed=4))
    capture.close()
    (window,) = run_drift(settings, registry.root).computed
    assert not window.drifted and all(s.score is not None and not s.in_alarm for s in window.signals)
