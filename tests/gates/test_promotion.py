from __future__ import annotations

from pathlib import Path

import pytest

from gates.errors import EmbedgateGateError, RunDirectoryError
from gates.promotion import PromotionRefused, bento_model_name, promote_run, save_to_bento_store
from service.registry.registry import Registry
from tests.gates.gated_runs import make_gated_run, regate


def test_passing_run_is_promoted_with_metadata_and_history(tmp_path):
    registry = tmp_path / "registry"
    result = promote_run(make_gated_run(tmp_path, "good", True), registry, who="ci", bento_store=False)
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
    promote_run(make_gated_run(tmp_path, "good", True), registry, bento_store=False)
    with pytest.raises(PromotionRefused, match=r"(?s)did not pass its gate.*not significant"):
        promote_run(make_gated_run(tmp_path, "bad", False), registry, bento_store=False)
    reg = Registry(registry)
    assert reg.champion().version == "v0001" and reg.versions() == ["v0001"]
    assert reg.history()[-1].action == "refused" and reg.history()[-1].run_id == "bad"


def test_force_needs_a_reason_and_is_recorded(tmp_path):
    registry = tmp_path / "registry"
    bad = make_gated_run(tmp_path, "bad", False)
    with pytest.raises(EmbedgateGateError, match="--force needs --reason"):
        promote_run(bad, registry, force=True, bento_store=False)
    result = promote_run(bad, registry, force=True, reason="incident 42: hotfix", bento_store=False)
    entry = Registry(registry).history()[-1]
    assert result.forced and entry.forced and entry.reason == "incident 42: hotfix"


def test_ungated_run_cannot_be_promoted(tmp_path):
    run = make_gated_run(tmp_path, "r", True)
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
        promote_run(make_gated_run(tmp_path, "good", True), registry, bento_store=False)
        tag = save_to_bento_store(Registry(registry), "v0001")
        name = bento_model_name(Registry(registry))  # this registry's own name (issue 31 item 10)
        assert name.startswith("embedgate-embedder-") and tag.startswith(f"{name}:v0001-")
        assert save_to_bento_store(Registry(registry), "v0001") == tag  # same content: reused, no error
        model = bentoml.models.get(tag)
        promote_run(make_gated_run(tmp_path, "newer", True, registry), registry, bento_store=True)
        assert bentoml.models.get(f"{name}:latest").info.labels["registry_version"] == "v0002"
        from gates.promotion import rollback

        rolled = rollback(registry, reason="bad p99")
        assert rolled.version == "v0001" and rolled.bento_tag == tag
        assert str(bentoml.models.get(f"{name}:latest").tag) == tag  # a Bento built now packs v0001
        assert model.info.labels["registry_version"] == "v0001" and model.info.labels["serving_dim"] == "32"
        assert (Path(model.path) / "onnx" / "d32" / "model.onnx").read_bytes() == b"graph of good"
    finally:
        BentoMLContainer.model_store.reset()


def _refused_message(run, registry, **kwargs) -> str:
    with pytest.raises(PromotionRefused) as refused:
        promote_run(run, registry, bento_store=False, **kwargs)
    return str(refused.value)


@pytest.mark.parametrize("mode", ["immediate", "staged"])
def test_a_run_gated_against_the_base_model_is_not_promoted_over_a_champion(tmp_path, mode):
    """The issue's case: a run gated against the base model (or a pipeline with promotion disabled) must not
    replace, or be staged beside, a champion it was never compared with."""
    registry = tmp_path / "registry"
    promote_run(make_gated_run(tmp_path, "champion", True), registry, bento_store=False)
    message = _refused_message(make_gated_run(tmp_path, "rb", True), registry, mode=mode)
    assert "its gate compared it with the base model" in message and "the champion of" in message
    assert "is v0001" in message and "Re-gate it against v0001" in message
    assert "embedgate evaluate" in message and "embedgate gate" in message and "--force" in message
    reg = Registry(registry)
    assert reg.versions() == ["v0001"] and reg.champion().version == "v0001"
    last = reg.history()[-1]
    assert (last.action, last.run_id) == ("refused", "rb") and "not gated against the champion" in last.reason


def test_a_run_gated_against_an_older_champion_is_refused_and_regating_lets_it_through(tmp_path):
    registry = tmp_path / "registry"
    promote_run(make_gated_run(tmp_path, "first", True), registry, bento_store=False)
    late = make_gated_run(tmp_path, "late", True, registry)  # gated against v0001 ...
    promote_run(
        make_gated_run(tmp_path, "second", True, registry), registry, bento_store=False
    )  # ... v0002 wins
    message = _refused_message(late, registry)
    assert (
        "its gate compared it with champion v0001, but the champion of" in message and "is v0002" in message
    )
    regate(late, registry)
    assert promote_run(late, registry, bento_store=False).previous == "v0002"


def test_a_run_gated_against_another_registrys_champion_of_the_same_name_is_refused(tmp_path):
    ours, theirs = tmp_path / "registry", tmp_path / "other-registry"
    promote_run(make_gated_run(tmp_path, "ours", True), ours, bento_store=False)
    other = make_gated_run(tmp_path, "theirs", True)
    (other.onnx / "d32" / "model.onnx").write_bytes(b"another graph")
    promote_run(other, theirs, bento_store=False)
    run = make_gated_run(tmp_path, "new", True, theirs)  # gated against the other registry's v0001
    message = _refused_message(run, ours)
    assert "whose files differ from" in message and "v0001" in message


def test_forcing_past_a_baseline_mismatch_needs_a_reason_and_is_recorded(tmp_path):
    registry = tmp_path / "registry"
    promote_run(make_gated_run(tmp_path, "first", True), registry, bento_store=False)
    run = make_gated_run(tmp_path, "hotfix", True)
    with pytest.raises(EmbedgateGateError, match="--force needs --reason"):
        promote_run(run, registry, bento_store=False, force=True)
    result = promote_run(run, registry, bento_store=False, force=True, reason="on-call approved")
    assert result.forced and result.previous == "v0001"
    entry = Registry(registry).history()[-1]
    assert entry.forced and "on-call approved" in entry.reason and "forced past" in entry.reason


def test_cli_promote_exits_1_and_prints_the_regate_commands(tmp_path, capsys):
    from gates.cli import main

    registry = tmp_path / "registry"
    args = ["--registry", str(registry), "--no-bento-store"]
    assert main(["promote", str(make_gated_run(tmp_path, "first", True).root), *args]) == 0
    capsys.readouterr()  # the first promotion's warnings (no drift reference)
    assert main(["promote", str(make_gated_run(tmp_path, "second", True).root), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("refused: run second cannot be promoted") and "re-gate".lower() in err.lower()
    assert f"embedgate evaluate {tmp_path / 'runs' / 'second'}" in err
