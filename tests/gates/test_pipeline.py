"""The whole gated path on the tiny model: promote on a real gain, block a repeat that is not better, stop on bad
data, and the exit codes CI chains on."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from gates.cli import main
from service.registry import Registry
from tests.synthetic import write_lay_jargon_beir

pytestmark = pytest.mark.slow  # three short pipelines: ~1-2 minutes on 2 cores


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("pipeline")
    data = write_lay_jargon_beir(root / "data")
    config = root / "pipeline.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "base_model": str(tiny_model_dir),
                "data": {"path": str(data), "type": "ir"},
                "output_dir": str(root / "runs"),
                "epochs": 4,
                "batch_size": 16,
                "learning_rate": 1e-3,
                "matryoshka_dims": [32, 16],
                "seed": 5,
                "promotion": {"registry": str(root / "registry")},
            }
        )
    )
    return root, config


def _cache_entries(root):
    return [json.loads(p.read_text()) for p in (root / "cache" / "embeddings").rglob("*.json")]


def _runs(root):
    return sorted((root / "runs").iterdir(), key=lambda p: p.stat().st_mtime)


def test_first_run_promotes_a_better_model(workspace, capsys):
    root, config = workspace
    code = main(["pipeline", str(config), "--set", "run_id=first"])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    assert "PROMOTED: v0001 is the champion" in out.err + out.out
    assert "[mine + train] mining hard negatives" in out.out
    assert re.search(r"epoch [\d.]+ step \d+/\d+: loss [\d.]+, dev ndcg@10_mean 0\.\d{4}", out.out), out.out
    run = root / "runs" / "first"
    decision = json.loads((run / "gate" / "decision.json").read_text())
    primary = next(r for r in decision["checks"] if r["check"] == "primary_improves")
    assert decision["passed"] and primary["delta"] > 0 and primary["p_value"] < 0.05
    # The forgetting check runs by default on the packaged general-domain STS set, and its delta is in the table.
    general = next(r for r in decision["checks"] if r["check"] == "general_domain_sts")
    assert general["status"] in {"pass", "fail"} and general["delta"] is not None, general
    assert "general_domain_sts" in out.out + out.err
    assert "early stopping: stop after" in out.out + out.err  # on by default, with the patience and why
    assert re.search(
        r"without a dev gain beyond noise .*the last dev gain beyond noise at step \d+", out.out + out.err
    )
    assert decision["baseline"].startswith("base model")
    pipeline = json.loads((run / "pipeline.json").read_text())
    assert [s["name"] for s in pipeline["stages"]] == [
        "data gate",
        "mine + train",
        "export",
        "evaluate",
        "gate",
        "drift reference",
        "promote",
    ]
    assert "reference/reference.json" in json.loads((run / "manifest.json").read_text())["files"]
    assert "reference/reference.json" in Registry(root / "registry").verify("v0001")["files"]
    assert list(pipeline["stages"]), "nothing to check: pipeline['stages'] is empty"
    assert all(s["status"] == "passed" and s["seconds"] >= 0 for s in pipeline["stages"])
    manifest = json.loads((run / "manifest.json").read_text())["files"]
    for rel in (
        "config.yaml",
        "data/report.json",
        "model/model.safetensors",
        "onnx/export.json",
        "eval/candidate.json",
        "eval/baseline.json",
        "eval/metrics_vs_dim.png",
        "gate/decision.json",
        "mined/hard_negatives.jsonl",
        "train/loss_curve.png",
    ):
        assert rel in manifest, rel
    assert not (run / "train" / "checkpoints").exists()
    report = (run / "report.html").read_text()
    assert "report.html" in manifest and "PROMOTED" in report and "v0001 is the champion" in report
    assert "ndcg@10_mean" in report and "Gate decision" in report  # the dev log table and the decision
    # Why training stopped when it did, and which checkpoint became the model.
    assert re.search(r"Early stopping: stop after \d+ evaluations without a dev gain beyond noise", report)
    assert (
        re.search(r"Checkpoint: (best dev|last) checkpoint", report)
        or "Checkpoint: checkpoint at step" in report
    )
    registry = Registry(root / "registry")
    assert registry.champion().version == "v0001"
    assert registry.verify("v0001")["run_id"] == "first"


def test_second_identical_run_is_blocked_and_says_why(workspace, capsys):
    root, config = workspace
    code = main(["pipeline", str(config), "--set", "run_id=second"])
    out = capsys.readouterr()
    assert code == 1, out.out + out.err
    assert "BLOCKED: quality gate failed, not promoted" in out.err
    decision = json.loads((root / "runs" / "second" / "gate" / "decision.json").read_text())
    assert decision["baseline"] == "champion v0001"
    # The champion is the first run's candidate, encoded then: nothing of the baseline is encoded again.
    cache = json.loads((root / "runs" / "second" / "eval" / "cache.json").read_text())
    baseline = [e for e in cache["lookups"] if e["label"].startswith("baseline/")]
    assert baseline and all(e["hit"] for e in baseline), cache
    assert any(e["label"] == "mining" for e in _cache_entries(root)), (
        "mining did not encode through the cache"
    )
    primary = next(r for r in decision["checks"] if r["check"] == "primary_improves")
    assert primary["status"] == "fail"
    registry = Registry(root / "registry")
    assert registry.champion().version == "v0001" and registry.versions() == ["v0001"]
    assert registry.history()[-1].action == "refused" and registry.history()[-1].run_id == "second"


def test_bad_data_stops_at_the_data_gate(workspace, tmp_path, capsys):
    root, config = workspace
    bad = write_lay_jargon_beir(tmp_path / "bad")
    with open(bad / "qrels" / "train.tsv", "a") as handle:
        handle.write("q1\tno-such-doc\t1\n")
    code = main(["pipeline", str(config), "--set", "run_id=bad", "--set", f"data.path={bad}"])
    out = capsys.readouterr()
    assert code == 1
    assert "data gate failed" in out.err
    pipeline = json.loads((root / "runs" / "bad" / "pipeline.json").read_text())
    assert [(s["name"], s["status"]) for s in pipeline["stages"]] == [("data gate", "blocked")]
    assert (root / "runs" / "bad" / "data" / "report.json").is_file()


def test_config_errors_exit_2(workspace, capsys):
    _, config = workspace
    assert main(["pipeline", str(config), "--set", "evaluation.split=7", "--set", "gate.bogus=1"]) == 2
    assert "unknown field 'gate.bogus'" in capsys.readouterr().err
