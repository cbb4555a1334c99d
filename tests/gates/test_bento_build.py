"""Issue 31 item 10: BentoML's model store is shared by every registry of a user, and a Bento packed the store's
`embedgate-embedder:latest`, i.e. the champion of whichever registry promoted last. `embedgate build-bento` packs the
exact champion of the registry it is given, under that registry's own model name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gates.bento import SERVED_TAG, build_bento
from gates.errors import EmbedgateGateError
from gates.promotion import bento_model_name, promote_run
from service.registry.registry import Registry
from tests.gates.gated_runs import make_gated_run
from tests.service.serving import REPO_ROOT


@pytest.fixture
def bento_home(tmp_path, monkeypatch):
    """A private BentoML home (the user's store stays untouched), reset after the test."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    home = tmp_path / "bentoml"
    monkeypatch.setenv("BENTOML_HOME", str(home))
    monkeypatch.setenv("BENTOML_DO_NOT_TRACK", "true")
    providers = [
        getattr(BentoMLContainer, name)
        for name in ("bentoml_home", "tmp_bento_store_dir", "bento_store_dir", "model_store_dir")
    ]
    providers += [BentoMLContainer.model_store, BentoMLContainer.bento_store]
    for provider in providers:  # read BENTOML_HOME again (and create its folders)
        provider.reset()
    yield home
    for provider in providers:
        provider.reset()


def _two_registries(tmp_path):
    """The demo's registry and a project's, each with its own champion v0001, the project's promoted last."""
    demo, project = tmp_path / "demo" / "registry", tmp_path / "project" / "registry"
    promote_run(make_gated_run(tmp_path / "demo", "demo-run", True), demo)
    promote_run(make_gated_run(tmp_path / "project", "project-run", True), project)
    return Registry(demo), Registry(project)


def test_each_registry_has_its_own_model_name_and_latest(tmp_path, bento_home):
    import bentoml

    demo, project = _two_registries(tmp_path)
    assert bento_model_name(demo) != bento_model_name(project)
    for registry, run in ((demo, "demo-run"), (project, "project-run")):
        latest = bentoml.models.get(f"{bento_model_name(registry)}:latest")
        assert latest.info.labels["run_id"] == run and latest.info.labels["registry_version"] == "v0001"
    assert not any(str(model.tag).startswith("embedgate-embedder:") for model in bentoml.models.list())


def _cli(args: list[str], home: Path, cwd: Path) -> str:
    """`embedgate ...` as a user runs it, in a fresh process with BENTOML_HOME at `home`."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "BENTOML_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


@pytest.mark.integration
def test_a_bento_carries_the_champion_of_the_registry_it_was_built_from(tmp_path):
    home = tmp_path / "bentoml"
    demo, project = tmp_path / "demo" / "registry", tmp_path / "project" / "registry"
    promote = ["-m", "gates.cli", "promote"]
    _cli(
        [*promote, str(make_gated_run(tmp_path / "demo", "demo-run", True).root), "--registry", str(demo)],
        home,
        tmp_path,
    )
    # The project's champion is saved to the shared store last: before, it was the store's :latest, which the Bento packed.
    run = make_gated_run(tmp_path / "project", "project-run", True)
    _cli([*promote, str(run.root), "--registry", str(project)], home, tmp_path)

    out = _cli(["-m", "gates.cli", "build-bento", "--registry", str(demo)], home, tmp_path)
    bento_tag = out.split()[1].rstrip(":")
    assert f"carries v0001, the champion of {demo}" in out
    # The Bento's record of what it packs, and what its service gets for the tag it loads without a registry
    # (EMBEDGATE_MODEL_TAG's default), read in the process that loads the Bento as `bentoml serve` does.
    code = (
        "import json, sys, bentoml; bento = bentoml.bentos.get(sys.argv[1]); bentoml.load(sys.argv[1]); "
        f"m = bentoml.models.get({SERVED_TAG!r}); "
        "print(json.dumps({'packed': [[str(x.tag), x.alias] for x in bento.info.models], "
        "'labels': m.info.labels, 'graph': (m.path_of('onnx/d32/model.onnx'))}))"
    )
    seen = json.loads(_cli(["-c", code, bento_tag], home, tmp_path).strip().splitlines()[-1])
    [[packed, alias]] = seen["packed"]
    assert alias == SERVED_TAG and packed.startswith("embedgate-embedder-") and ":v0001-" in packed
    assert seen["labels"]["run_id"] == "demo-run" and seen["labels"]["registry_version"] == "v0001"
    assert Path(seen["graph"]).read_bytes() == b"graph of demo-run"  # not the project's, promoted after it


def test_building_needs_a_champion_and_the_project_folder(tmp_path, bento_home):
    with pytest.raises(EmbedgateGateError, match="has no champion: promote a run first"):
        build_bento(tmp_path / "empty")
    demo = tmp_path / "registry"
    promote_run(make_gated_run(tmp_path, "r", True), demo, bento_store=False)
    with pytest.raises(EmbedgateGateError, match=r"expected the embedgate project folder .*--build-ctx"):
        build_bento(demo, tmp_path)
