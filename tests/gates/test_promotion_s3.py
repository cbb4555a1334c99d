"""`embedgate promote` / `history` / `rollback` against an S3 registry (moto on 127.0.0.1): a promotion that loses
the champion's compare-and-swap exits 1 with the one-line re-gate message, and both events are in the history."""

from __future__ import annotations

import pytest

from gates.cli import main
from gates.promotion import promote_run
from service.errors import RegistryError
from service.registry.object_registry import ObjectRegistry
from service.registry.registry import Registry
from tests.gates.gated_runs import make_gated_run, regate
from training.run_dir import RunPaths

pytestmark = pytest.mark.integration


def test_the_cli_promotion_that_loses_the_race_is_told_to_regate(
    tmp_path, s3_registry_url, monkeypatch, capsys
):
    args = ["--registry", s3_registry_url, "--no-bento-store"]
    assert main(["promote", str(make_gated_run(tmp_path, "first", True).root), *args]) == 0
    real_switch = ObjectRegistry._switch_cas
    rival = make_gated_run(tmp_path, "rival", True, s3_registry_url)

    def switch_after_a_rival_promotes(self, version, previous, etag):
        # Another CI job promotes between this one's champion read and its switch (the race, made deterministic).
        monkeypatch.setattr(ObjectRegistry, "_switch_cas", real_switch)
        promote_run(rival, s3_registry_url, bento_store=False)
        return real_switch(self, version, previous, etag)

    monkeypatch.setattr(ObjectRegistry, "_switch_cas", switch_after_a_rival_promotes)
    capsys.readouterr()
    assert main(["promote", str(make_gated_run(tmp_path, "second", True, s3_registry_url).root), *args]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("refused: the champion changed since the gate ran (it was v0001, it is now v0003)")
    assert "re-gate" in err and len(err.splitlines()) == 1
    registry = Registry(s3_registry_url)
    assert registry.champion().version == "v0003"
    assert [(e.action, e.version, e.run_id) for e in registry.history()] == [
        ("promote", "v0001", "first"),
        ("promote", "v0003", "rival"),
        ("refused", "v0002", "second"),
    ]
    from service.registry.aliases import read_state

    state = read_state(registry)  # the refused v0002 is stored but never served (nor listed, nor preloaded)
    assert (state.servable, state.never_served) == (("v0001", "v0003"), ("v0002",))
    # promoted again as it was: its gate compared it with v0001, not with the champion v0003
    assert main(["promote", str(tmp_path / "runs" / "second"), *args]) == 1
    assert "its gate compared it with champion v0001, but the champion of" in capsys.readouterr().err
    # re-gated against v0003 (here: the same scores) and promoted again: not a duplicate of the refused v0002
    regate(RunPaths(tmp_path / "runs" / "second"), s3_registry_url)
    assert main(["promote", str(tmp_path / "runs" / "second"), *args]) == 0
    assert registry.champion().version == "v0004" and registry.champion().previous == "v0003"
    assert main(["history", *args[:2]]) == 0
    assert main(["rollback", *args, "--reason", "back"]) == 0
    assert Registry(s3_registry_url).champion().version == "v0003"


def test_staged_promotion_cutover_and_retire_on_the_s3_registry(tmp_path, s3_registry_url, capsys):
    from service.registry.aliases import read_state

    args = ["--registry", s3_registry_url, "--no-bento-store"]
    assert main(["promote", str(make_gated_run(tmp_path, "first", True).root), *args]) == 0
    second = make_gated_run(tmp_path, "second", True, s3_registry_url)
    assert main(["promote", str(second.root), *args, "--staged"]) == 0
    state = read_state(Registry(s3_registry_url))
    assert (state.champion, state.candidate) == ("v0001", "v0002")
    assert main(["cutover", "v0002", "--registry", s3_registry_url]) == 0
    state = read_state(Registry(s3_registry_url))
    assert (state.champion, state.candidate) == ("v0002", None)
    assert main(["retire", "v0001", "--registry", s3_registry_url]) == 0
    assert read_state(Registry(s3_registry_url)).retired == ("v0001",)
    actions = [(e.action, e.version) for e in Registry(s3_registry_url).history()]
    assert actions == [("promote", "v0001"), ("promote", "v0002"), ("cutover", "v0002"), ("retire", "v0001")]


def test_an_alias_write_that_lost_to_another_writer_is_refused(tmp_path, s3_registry_url):
    from service.registry.aliases import set_candidate

    registry = Registry(s3_registry_url)
    assert (
        main(
            [
                "promote",
                str(make_gated_run(tmp_path, "first", True).root),
                "--registry",
                s3_registry_url,
                "--no-bento-store",
            ]
        )
        == 0
    )
    registry.add_version(
        {"onnx": tmp_path / "runs" / "first" / "onnx"}, metadata={}, make_champion=False, alias="candidate"
    )
    with registry._locked():
        registry.read_pointer("aliases.json")  # absent when read ...
        Registry(s3_registry_url).write_pointer(
            "aliases.json", {"candidate": None, "retired": []}
        )  # ... then not
        with pytest.raises(RegistryError, match="changed while this command ran"):
            registry.write_pointer("aliases.json", {"candidate": "v0002", "retired": []})
    set_candidate(registry, "v0002")  # a fresh attempt reads the new state and goes through
