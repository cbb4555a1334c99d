from __future__ import annotations

import json
from pathlib import Path

import pytest

from gates.errors import EmbedgateGateError, RunDirectoryError
from gates.promotion import PromotionRefused, promote_run, save_to_bento_store
from service.registry import Registry
from training.run_dir import RunPaths


def _gated_run(tmp_path: Path, name: str, passed: bool) -> RunPaths:
    run = RunPaths(tmp_path / "runs" / name)
    (run.onnx / "d32").mkdir(parents=True)
    (run.onnx / "d32" / "model.onnx").write_bytes(f"graph of {name}".encode())
    (run.onnx / "embedder.json").write_text("{}")
    run.gate.mkdir(parents=True)
    checks = [
        {
            "check": "primary_improves",
            "kind": "improvement",
            "metric": "ndcg@10",
            "status": "pass" if passed else "fail",
            "severity": "critical",
            "candidate": 0.7,
            "baseline": 0.6,
            "delta": 0.1,
            "p_value": 0.001 if passed else 0.3,
            "reason": "ok" if passed else "delta +0.0020 not significant (p=0.300 >= 0.05)",
        }
    ]
    (run.gate / "decision.json").write_text(
        json.dumps(
            {
                "passed": passed,
                "serving_dim": 32,
                "baseline": "base model",
                "checks": checks,
                "policy": {"serve_precision": "fp32"},
            }
        )
    )
    (run.root / "config.yaml").write_text("data: {path: x}\n")
    return run


def test_passing_run_is_promoted_with_metadata_and_history(tmp_path):
    registry = tmp_path / "registry"
    result = promote_run(_gated_run(tmp_path, "good", True), registry, who="ci", bento_store=False)
    assert (result.version, result.previous, result.forced, result.serving_dim) == ("v0001", None, False, 32)
    reg = Registry(registry)
    manifest = reg.verify("v0001")
    assert manifest["serving_dim"] == 32 and manifest["run_id"] == "good"
    assert "onnx/d32/model.onnx" in manifest["files"] and "decision.json" in manifest["files"]
    entry = reg.history()[-1]
    assert entry.action == "promote" and entry.who == "ci"
    assert entry.metrics["primary_improves[ndcg@10]"]["p_value"] == 0.001


def test_failing_run_is_refused_and_the_refusal_recorded(tmp_path):
    registry = tmp_path / "registry"
    promote_run(_gated_run(tmp_path, "good", True), registry, bento_store=False)
    with pytest.raises(PromotionRefused, match=r"(?s)did not pass its gate.*not significant"):
        promote_run(_gated_run(tmp_path, "bad", False), registry, bento_store=False)
    reg = Registry(registry)
    assert reg.champion().version == "v0001" and reg.versions() == ["v0001"]
    assert reg.history()[-1].action == "refused" and reg.history()[-1].run_id == "bad"


def test_force_needs_a_reason_and_is_recorded(tmp_path):
    registry = tmp_path / "registry"
    bad = _gated_run(tmp_path, "bad", False)
    with pytest.raises(EmbedgateGateError, match="--force needs --reason"):
        promote_run(bad, registry, force=True, bento_store=False)
    result = promote_run(bad, registry, force=True, reason="incident 42: hotfix", bento_store=False)
    entry = Registry(registry).history()[-1]
    assert result.forced and entry.forced and entry.reason == "incident 42: hotfix"


def test_ungated_run_cannot_be_promoted(tmp_path):
    run = _gated_run(tmp_path, "r", True)
    (run.gate / "decision.json").unlink()
    with pytest.raises(RunDirectoryError, match="decision.json is missing: gate the run first"):
        promote_run(run, tmp_path / "registry", bento_store=False)


def test_promoted_version_lands_in_the_bentoml_model_store(tmp_path, monkeypatch):
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    import bentoml
    from bentoml._internal.configuration.containers import BentoMLContainer

    BentoMLContainer.bentoml_home.set(str(tmp_path / "bentoml"))
    BentoMLContainer.model_store.reset()
    try:
        registry = tmp_path / "registry"
        promote_run(_gated_run(tmp_path, "good", True), registry, bento_store=False)
        tag = save_to_bento_store(Registry(registry), "v0001")
        assert tag.startswith("embedgate-embedder:v0001-")
        assert save_to_bento_store(Registry(registry), "v0001") == tag  # same content: reused, no error
        model = bentoml.models.get(tag)
        promote_run(_gated_run(tmp_path, "newer", True), registry, bento_store=True)
        assert bentoml.models.get("embedgate-embedder:latest").info.labels["registry_version"] == "v0002"
        from gates.promotion import rollback

        rolled = rollback(registry, reason="bad p99")
        assert rolled.version == "v0001" and rolled.bento_tag == tag
        assert (
            str(bentoml.models.get("embedgate-embedder:latest").tag) == tag
        )  # a Bento built now packs v0001
        assert model.info.labels["registry_version"] == "v0001" and model.info.labels["serving_dim"] == "32"
        assert (Path(model.path) / "onnx" / "d32" / "model.onnx").read_bytes() == b"graph of good"
    finally:
        BentoMLContainer.model_store.reset()
