"""The registry's guarantees on a local folder AND on a real S3-compatible server (moto, started on 127.0.0.1),
through the same `Registry(location)` a user would open."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from service.errors import RegistryError
from service.registry.object_registry import ChampionChanged, ObjectRegistry
from service.registry.registry import Registry
from tests.service.fake_versions import fake_export, promote_export

pytestmark = pytest.mark.integration


@pytest.fixture(params=["local", "file-url", "s3"])
def location(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "registry")
    if request.param == "file-url":
        return f"file://{tmp_path / 'registry'}"
    return request.getfixturevalue("s3_registry_url")


def test_location_picks_the_backend(location):
    reg = Registry(location)
    assert isinstance(reg, ObjectRegistry) == location.startswith("s3://")


def test_promote_verify_and_read_back(location, tmp_path):
    reg = Registry(location)
    assert reg.champion() is None and reg.versions() == []
    v1 = promote_export(reg, fake_export(tmp_path, "a", b"one"), run_id="run-a")
    v2 = promote_export(reg, fake_export(tmp_path, "b", b"two"), run_id="run-b")
    assert (v1, v2) == ("v0001", "v0002") and reg.versions() == ["v0001", "v0002"]
    champion = Registry(location).champion()  # a fresh reader sees the switch
    assert champion.version == "v0002" and champion.previous == "v0001"
    manifest = reg.verify("v0002")
    assert manifest["run_id"] == "run-b" and "onnx/d32/model.onnx" in manifest["files"]
    assert (reg.version_dir("v0001") / "onnx" / "d32" / "model.onnx").read_bytes() == b"one"
    assert [(e.action, e.version, e.from_version) for e in reg.history()] == [
        ("promote", "v0001", None),
        ("promote", "v0002", "v0001"),
    ]


def test_rollback_walks_back_and_is_recorded(location, tmp_path):
    reg = Registry(location)
    for name in "abc":
        promote_export(reg, fake_export(tmp_path, name, name.encode()))
    assert reg.rollback(reason="p99").version == "v0002"
    assert reg.rollback(reason="again").version == "v0001"
    with pytest.raises(RegistryError, match="first champion"):
        reg.rollback()
    assert [e.action for e in reg.history()] == ["promote"] * 3 + ["rollback"] * 2
    with pytest.raises(RegistryError, match="not found"):
        reg.rollback(to="v0042")


def test_rollback_on_an_empty_registry_is_an_error(location):
    with pytest.raises(RegistryError, match="nothing to roll back"):
        Registry(location).rollback()


def test_a_changed_object_is_refused_at_download(s3_registry_url, tmp_path):
    import obstore

    reg = Registry(s3_registry_url)
    version = promote_export(reg, fake_export(tmp_path, "a", b"graph"))
    marker = json.loads(bytes(obstore.get(reg.store, f"versions/{version}.json").bytes()))
    obstore.put(reg.store, f"{marker['blobs']}/onnx/d32/model.onnx", b"GRAPH")  # same size, other bytes
    with pytest.raises(RegistryError, match="sha256 does not match the manifest"):
        reg.version_dir(version)
    assert not (reg.root / "versions" / version).exists()  # nothing half-placed in the cache
    with pytest.raises(RegistryError, match="sha256 does not match"):
        reg.verify(version)


def test_a_version_claimed_by_another_writer_takes_the_next_number(s3_registry_url, tmp_path):
    import obstore

    reg = Registry(s3_registry_url)
    obstore.put(reg.store, "versions/v0001.json", b'{"files": {}, "blobs": "blobs/x"}', mode="create")
    assert (
        promote_export(reg, fake_export(tmp_path, "a")) == "v0002"
    )  # If-None-Match refused v0001, v0002 was free


def test_a_lost_compare_and_swap_is_refused_and_recorded(s3_registry_url, tmp_path):
    reg = Registry(s3_registry_url)
    promote_export(reg, fake_export(tmp_path, "a", b"one"))
    with pytest.raises(ChampionChanged, match=r"champion changed since the gate ran .*re-gate"):
        promote_export(reg, fake_export(tmp_path, "b", b"two"), expected_champion="v0000")
    assert reg.champion().version == "v0001"
    last = reg.history()[-1]
    assert (last.action, last.version) == ("refused", None) and "re-gate" in last.reason
    assert reg.versions() == ["v0001"]  # refused before its upload: nothing stored


RACER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from service.registry.object_registry import ChampionChanged
    from service.registry.registry import Registry
    reg = Registry(sys.argv[1])
    start = float(sys.argv[3])
    while time.time() < start:
        time.sleep(0.001)
    try:
        print(reg.add_version({"onnx": Path(sys.argv[2])}, metadata={}, who=sys.argv[2], reason="race"))
    except ChampionChanged as err:
        print(f"refused: {err}", file=sys.stderr)
        sys.exit(1)
""")


def test_two_promotions_racing_one_champion_both_recorded(s3_registry_url, tmp_path):
    """Both read the same champion, upload, claim a number; exactly one compare-and-swap wins."""
    import time

    reg = Registry(s3_registry_url)
    promote_export(reg, fake_export(tmp_path, "base", b"base"))
    sources = [fake_export(tmp_path, f"r{i}", f"racer-{i}".encode()) for i in range(2)]
    # The race window is the upload between the champion read and the switch: make it wide with a bigger file.
    for src in sources:
        (src / "d32" / "weights.bin").write_bytes(b"w" * (4 << 20))
    start = time.time() + 3
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, s3_registry_url, str(src), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for src in sources
    ]
    results = [(proc.wait(timeout=120), proc.stdout.read(), proc.stderr.read()) for proc in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], results
    winner = next(out.strip() for code, out, _ in results if code == 0)
    loser_err = next(err for code, _, err in results if code == 1)
    assert "champion changed since the gate ran" in loser_err and "re-gate" in loser_err
    assert len(loser_err.strip().splitlines()) == 1
    assert reg.champion().version == winner and reg.champion().previous == "v0001"
    events = [(e.action, e.version) for e in reg.history()[1:]]
    assert sorted(a for a, _ in events) == ["promote", "refused"]
    assert ("promote", winner) in events and len({v for _, v in events}) == 2


KILLED_PROMOTER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from service.registry.registry import Registry
    Registry(sys.argv[1]).add_version({"onnx": Path(sys.argv[2])}, metadata={}, who="killed", reason="kill")
""")


@pytest.mark.parametrize("step", ["staged", "version_visible", "champion_switched", "history_written"])
def test_a_promotion_killed_at_any_step_leaves_a_readable_registry(s3_registry_url, s3_env, tmp_path, step):
    import os

    reg = Registry(s3_registry_url)
    promote_export(reg, fake_export(tmp_path, "a", b"one"))
    promote_export(reg, fake_export(tmp_path, "b", b"two"))
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_PROMOTER, s3_registry_url, str(fake_export(tmp_path, "c"))],
        env={**os.environ, "EMBEDGATE_TEST_KILL_AT": step},
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr  # SIGKILLed at the step
    fresh = Registry(s3_registry_url)
    switched = step in ("champion_switched", "history_written")
    assert fresh.champion().version == ("v0003" if switched else "v0002")
    assert [e.version for e in fresh.history()][:2] == ["v0001", "v0002"]  # every earlier event still there
    assert (fresh.version_dir(fresh.champion().version) / "onnx" / "embedder.json").is_file()  # servable
    assert fresh.rollback(reason="after the kill").version == ("v0002" if switched else "v0001")


def test_reconcile_removes_only_stale_unmarked_uploads(s3_registry_url, tmp_path):
    import obstore

    reg = Registry(s3_registry_url)
    version = promote_export(reg, fake_export(tmp_path, "a"))
    obstore.put(reg.store, "blobs/killed/onnx/d32/model.onnx", b"half")  # a killed promotion's upload
    assert reg.reconcile(stale_after_s=3600) == []  # too young: it could be a live upload
    assert reg.reconcile(stale_after_s=0) == ["removed 1 object(s) of an interrupted upload (blobs/killed)"]
    assert reg._keys("blobs/killed/") == []
    assert Registry(s3_registry_url).verify(version)["files"]  # the promoted version's blobs are untouched


def test_a_switch_killed_before_its_history_event_is_recorded_once(s3_registry_url, s3_env, tmp_path):
    import os

    from service.registry.registry import RECONCILER

    reg = Registry(s3_registry_url)
    promote_export(reg, fake_export(tmp_path, "a", b"one"))
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_PROMOTER, s3_registry_url, str(fake_export(tmp_path, "b"))],
        env={**os.environ, "EMBEDGATE_TEST_KILL_AT": "champion_switched"},
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr
    fresh = Registry(s3_registry_url)
    assert fresh.reconcile(record_after_s=3600) == []  # too recent: a live writer may be about to record it
    assert fresh.reconcile(record_after_s=0) == ["v0002: promote to the champion recorded after the fact"]
    assert Registry(s3_registry_url).reconcile(record_after_s=0) == []  # recorded exactly once
    last = fresh.history()[-1]
    assert (last.action, last.version, last.from_version, last.who) == (
        "promote",
        "v0002",
        "v0001",
        RECONCILER,
    )
