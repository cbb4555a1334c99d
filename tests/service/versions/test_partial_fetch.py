"""A replica on an S3 registry (moto on 127.0.0.1) fetches only the files of the graph it serves, each verified
against the version's marker; a part asked for later is fetched then (issue 31, item 3)."""

from __future__ import annotations

import json
import threading

import obstore
import pytest

from service.errors import RegistryError
from service.model.serving_model import SERVING_PARTS, load_version, serving_files
from service.registry.object_registry import fetched_dir
from service.registry.registry import Registry, verify_manifest
from service.storage import object_store
from service.versions.hot_swap import ChampionWatcher, ModelHolder
from service.versions.version_pool import VersionPool
from tests.service.serving import TINY_DIMS, TINY_SERVING_DIM, promote

pytestmark = pytest.mark.integration
FULL, SMALL = TINY_DIMS[0], TINY_DIMS[-1]


@pytest.fixture
def gets(monkeypatch) -> list[str]:
    """Every object key the registry GETs from the store, in order."""
    seen: list[str] = []
    real = object_store.get

    def recording(store, key):
        seen.append(key)
        return real(store, key)

    monkeypatch.setattr(object_store, "get", recording)
    return seen


def _graphs(keys: list[str]) -> list[str]:
    return sorted(key.split("/", 2)[2] for key in keys if key.endswith(".onnx"))


def test_a_replica_fetches_only_the_graph_it_serves(s3_registry_url, tiny_exports, gets):
    version = promote(Registry(s3_registry_url), tiny_exports["a"], precision="int8")
    pool = VersionPool(Registry(s3_registry_url), lambda d: None, keep_versions=1, on_demand_bytes=0)
    folder = pool.fetch(version)
    assert _graphs(gets) == [f"onnx/d{FULL}/model_int8.onnx"]  # not fp32, not the smaller dims' graphs
    held = set(json.loads((folder / "manifest.json").read_text())["files"])
    marker = Registry(s3_registry_url).manifest(version)["files"]
    assert held == {rel for rel in marker if rel.startswith(SERVING_PARTS)} | {
        f"onnx/d{FULL}/model_int8.onnx"
    }
    assert verify_manifest(folder)["files"] == {rel: marker[rel] for rel in held}  # each file as promoted
    model = load_version(folder, precision=None, threads=1)  # verifies, loads and warms up what was fetched
    assert (model.precision, model.serving_dim) == ("int8", TINY_SERVING_DIM)
    assert model.embedder.embed(["x"], dimensions=SMALL).shape == (1, SMALL)  # smaller dims by truncation


def test_the_service_precision_decides_which_graph_is_fetched(s3_registry_url, tiny_exports, gets):
    version = promote(Registry(s3_registry_url), tiny_exports["a"], precision="int8")
    folder = serving_files(Registry(s3_registry_url), version, "fp32")
    assert _graphs(gets) == [f"onnx/d{FULL}/model.onnx"]
    assert load_version(folder, precision="fp32", threads=1).precision == "fp32"


def test_a_part_asked_for_later_is_fetched_then(s3_registry_url, tiny_exports, gets):
    reg = Registry(s3_registry_url)
    version = promote(reg, tiny_exports["a"])
    serving_files(reg, version, None)
    gets.clear()
    # another dim's graphs (as `embedgate embed --dim` would read them)
    folder = fetched_dir(reg, version, [f"onnx/d{SMALL}/"])
    assert _graphs(gets) == [f"onnx/d{SMALL}/model.onnx", f"onnx/d{SMALL}/model_int8.onnx"]
    gets.clear()
    assert fetched_dir(reg, version, [f"onnx/d{SMALL}/"]) == folder and gets == []  # held: nothing fetched
    full = reg.version_dir(version)  # every file (the gates' callers), the rest fetched now
    held_before = {f"onnx/d{FULL}/model.onnx", f"onnx/d{SMALL}/model.onnx", f"onnx/d{SMALL}/model_int8.onnx"}
    graphs = {rel for rel in reg.manifest(version)["files"] if rel.endswith(".onnx")}
    assert _graphs(gets) == sorted(graphs - held_before)  # only what the cache lacked
    assert verify_manifest(full)["files"] == reg.manifest(version)["files"]


def test_an_older_full_cache_is_served_without_fetching_a_graph(s3_registry_url, tiny_exports, gets):
    reg = Registry(s3_registry_url)
    version = promote(reg, tiny_exports["a"])
    reg.version_dir(version)
    (reg.root / "versions" / f".{version}.json").unlink()  # what the earlier download left: no marker copy
    gets.clear()
    serving_files(Registry(s3_registry_url), version, None)
    assert gets == [f"versions/{version}.json"]  # the marker only


def test_a_changed_object_of_an_unserved_part_is_refused_when_asked_for(s3_registry_url, tiny_exports):
    reg = Registry(s3_registry_url)
    version = promote(reg, tiny_exports["a"])
    marker = reg.manifest(version)
    rel = f"onnx/d{SMALL}/model.onnx"
    obstore.put(reg.store, f"{marker['blobs']}/{rel}", b"x" * marker["files"][rel]["size"])
    folder = serving_files(reg, version, None)  # the served graph is intact: it serves
    load_version(folder, precision=None, threads=1)
    with pytest.raises(RegistryError, match=rf"{rel}: sha256 does not match the manifest of {version}"):
        fetched_dir(reg, version, [f"onnx/d{SMALL}/"])
    assert (
        not (folder / rel).exists() and rel not in json.loads((folder / "manifest.json").read_text())["files"]
    )
    verify_manifest(folder)  # the refused part left the cached version as it was


def test_parts_must_be_a_list_of_prefixes(s3_registry_url, tiny_exports):
    reg = Registry(s3_registry_url)
    version = promote(reg, tiny_exports["a"])
    with pytest.raises(
        RegistryError, match=r"parts='onnx/': expected a list of path prefixes .* pass \['onnx/'\]"
    ):
        reg.version_dir(version, "onnx/")


def test_two_threads_fetching_parts_of_one_version_both_land(s3_registry_url, tiny_exports):
    reg = Registry(s3_registry_url)
    version = promote(reg, tiny_exports["a"])
    errors: list[BaseException] = []

    def fetch(prefix: str) -> None:
        try:
            Registry(s3_registry_url).version_dir(version, [prefix])
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=fetch, args=(f"onnx/d{dim}/",)) for dim in TINY_DIMS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    held = verify_manifest(reg.root / "versions" / version)["files"]
    assert {rel for rel in held if rel.endswith(".onnx")} == {
        f"onnx/d{dim}/{name}" for dim in TINY_DIMS for name in ("model.onnx", "model_int8.onnx")
    }


def test_the_periodic_check_fetches_nothing_and_reports_a_removed_graph(s3_registry_url, tiny_exports, gets):
    reg = Registry(s3_registry_url)
    version = promote(reg, tiny_exports["a"])
    pool = VersionPool(reg, lambda d: load_version(d, precision=None, threads=1), 1, 0)
    watcher = ChampionWatcher(reg, ModelHolder(), load=pool.load_dir, fetch=pool.fetch)
    assert watcher.check().action == "swapped"
    gets.clear()
    assert watcher.reverify() is None and not [key for key in gets if key.startswith("blobs/")]
    graph = reg.root / "versions" / version / "onnx" / f"d{FULL}" / "model.onnx"
    graph.unlink()  # not silently fetched again: the served files changed, /ready says so
    assert "no longer match its manifest" in watcher.reverify()
    assert not graph.exists()


def test_a_part_matching_nothing_still_gives_a_verified_folder(s3_registry_url, tiny_exports):
    reg = Registry(s3_registry_url)
    version = promote(reg, tiny_exports["a"])  # promoted without a drift reference
    marker = reg.manifest(version)
    rel = "onnx/embedder.json"
    obstore.put(reg.store, f"{marker['blobs']}/{rel}", b" " * marker["files"][rel]["size"])
    with pytest.raises(RegistryError, match="sha256 does not match"):
        serving_files(reg, version, None)  # refused: nothing placed (the marker's copy is kept)
    folder = fetched_dir(reg, version, ["reference/"])  # what the drift monitor asks for
    # a folder holding none of the version's files, not a missing one
    assert verify_manifest(folder)["files"] == {}
