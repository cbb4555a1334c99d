from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from service.errors import RegistryError
from service.registry.backend import FOLDER, OBJECT_STORAGE, backend_name
from service.registry.registry import Registry, verify_manifest
from tests.service.fake_versions import fake_export, promote_export


@pytest.mark.parametrize(
    ("location", "backend"),
    [
        ("registry", FOLDER),
        ("/abs/registry", FOLDER),
        ("file:///abs/registry", FOLDER),
        ("s3://b/p", OBJECT_STORAGE),
    ],
)
def test_the_location_names_the_backend(location, backend):
    assert backend_name(location) == backend


def test_a_file_url_opens_the_folder_it_names(tmp_path):
    reg = Registry(f"file://{tmp_path / 'registry'}")
    assert type(reg) is Registry and reg.root == tmp_path / "registry"


def test_a_folder_registry_loads_no_object_storage_code(tmp_path):
    """service.registry.backend imports a backend when a location asks for it: a folder registry (what the
    service reads in most deployments) never loads the object-storage backend or obstore."""
    script = (
        "import sys; from service.registry.registry import Registry; "
        f"Registry({str(tmp_path)!r}).versions(); "
        "print(sorted(m for m in sys.modules if m in ('service.registry.object_registry', 'obstore')))"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=os.getcwd(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_promote_creates_immutable_verified_version_and_moves_champion(tmp_path):
    reg = Registry(tmp_path / "registry")
    assert reg.champion() is None and reg.versions() == []
    v1 = promote_export(reg, fake_export(tmp_path, "a", b"one"), run_id="run-a")
    v2 = promote_export(reg, fake_export(tmp_path, "b", b"two"), run_id="run-b")
    assert (v1, v2) == ("v0001", "v0002")
    champion = reg.champion()
    assert champion.version == "v0002" and champion.previous == "v0001"
    manifest = reg.verify("v0002")
    assert manifest["run_id"] == "run-b" and "onnx/d32/model.onnx" in manifest["files"]
    assert (reg.version_dir("v0001") / "onnx" / "d32" / "model.onnx").read_bytes() == b"one"


def test_tampered_or_extra_files_are_refused(tmp_path):
    reg = Registry(tmp_path / "registry")
    version = promote_export(reg, fake_export(tmp_path, "a"))
    graph = reg.version_dir(version) / "onnx" / "d32" / "model.onnx"
    graph.write_bytes(b"GRAPH")  # same size, different content
    with pytest.raises(RegistryError, match="sha256 does not match the manifest"):
        reg.verify(version)
    graph.write_bytes(b"graph")
    reg.verify(version)
    (reg.version_dir(version) / "onnx" / "evil.onnx").write_bytes(b"x")
    with pytest.raises(RegistryError, match=r"unexpected: \['onnx/evil.onnx'\]"):
        reg.verify(version)
    (reg.version_dir(version) / "onnx" / "evil.onnx").unlink()
    (reg.version_dir(version) / "manifest.json").unlink()
    with pytest.raises(RegistryError, match="no manifest.json"):
        verify_manifest(reg.version_dir(version))


def test_rollback_walks_back_and_is_recorded(tmp_path):
    reg = Registry(tmp_path / "registry")
    for name in "abc":
        promote_export(reg, fake_export(tmp_path, name, name.encode()))
    assert reg.rollback(who="oncall", reason="bad latency").version == "v0002"
    assert reg.champion().previous == "v0001"
    assert reg.rollback(who="oncall", reason="still bad").version == "v0001"
    with pytest.raises(RegistryError, match="v0001 is the first champion"):
        reg.rollback()
    actions = [(e.action, e.version, e.from_version) for e in reg.history()]
    assert actions == [
        ("promote", "v0001", None),
        ("promote", "v0002", "v0001"),
        ("promote", "v0003", "v0002"),
        ("rollback", "v0002", "v0003"),
        ("rollback", "v0001", "v0002"),
    ]
    assert reg.history()[-1].who == "oncall" and reg.history()[-1].reason == "still bad"


def test_rollback_refuses_a_tampered_target(tmp_path):
    reg = Registry(tmp_path / "registry")
    promote_export(reg, fake_export(tmp_path, "a"))
    promote_export(reg, fake_export(tmp_path, "b"))
    (reg.version_dir("v0001") / "onnx" / "embedder.json").write_text("{}")
    with pytest.raises(RegistryError, match="sha256 does not match|files do not match"):
        reg.rollback()
    assert reg.champion().version == "v0002"


def test_rollback_errors(tmp_path):
    reg = Registry(tmp_path / "registry")
    with pytest.raises(RegistryError, match="has no champion yet"):
        reg.rollback()
    with pytest.raises(RegistryError, match="invalid version 'latest'"):
        reg.version_dir("latest")
    promote_export(reg, fake_export(tmp_path, "a"))
    with pytest.raises(RegistryError, match=r"version v0009 not found .*\(versions: v0001\)"):
        reg.version_dir("v0009")


def test_history_is_append_only(tmp_path):
    reg = Registry(tmp_path / "registry")
    promote_export(reg, fake_export(tmp_path, "a"))
    before = reg.history_path.read_bytes()
    promote_export(reg, fake_export(tmp_path, "b"))
    reg.record_refusal(run_id="r3", who="ci", reason="gate failed: ndcg@10 not significant")
    reg.rollback()
    after = reg.history_path.read_bytes()
    assert after.startswith(before) and len(after.splitlines()) == 4
    assert [e.action for e in reg.history()] == ["promote", "promote", "refused", "rollback"]


def _promote_in_process(args):
    root, src, i = args
    return Registry(root).add_version({"onnx": Path(src)}, metadata={"i": i}, who=f"worker{i}", reason="race")


def test_concurrent_promotions_do_not_corrupt_the_pointer(tmp_path):
    root = tmp_path / "registry"
    sources = [str(fake_export(tmp_path, f"s{i}", f"payload-{i}".encode())) for i in range(8)]
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        versions = pool.map(_promote_in_process, [(str(root), s, i) for i, s in enumerate(sources)])
    reg = Registry(root)
    assert sorted(versions) == [f"v{i:04d}" for i in range(1, 9)]
    assert reg.champion().version in versions
    for version in versions:
        reg.verify(version)
    history = reg.history()
    assert len(history) == 8 and sorted(e.version for e in history) == sorted(versions)
    # Each promotion saw the champion left by the one before it: the chain has no gaps or forks.
    chain = {e.version: e.from_version for e in history}
    assert sorted(v for v in chain.values() if v) == sorted(set(versions) - {reg.champion().version})


def test_crash_between_copy_and_switch_leaves_the_old_champion(tmp_path):
    root = tmp_path / "registry"
    reg = Registry(root)
    promote_export(reg, fake_export(tmp_path, "old", b"old"))
    big = fake_export(tmp_path, "new", b"new")
    for i in range(20):
        (big / f"part{i}.bin").write_bytes(os.urandom(1024))
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        import service.registry.registry as r
        real = r.shutil.copyfile
        count = 0
        def dying_copy(src, dst):
            global count
            count += 1
            if count == 5:
                os.kill(os.getpid(), signal.SIGKILL)   # the process dies mid-copy
            return real(src, dst)
        r.shutil.copyfile = dying_copy
        r.Registry({str(root)!r}).add_version({{"onnx": Path({str(big)!r})}}, metadata={{}}, who="t", reason="t")
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=os.getcwd(), capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert reg.champion().version == "v0001"
    assert reg.versions() == ["v0001"]  # the half-built version is not visible
    assert len(reg.history()) == 1
    # The next promotion cleans the debris and proceeds normally.
    assert promote_export(reg, big) == "v0002"
    assert not list((root / "versions").glob(".tmp-*"))
    reg.verify("v0002")


def test_damaged_pointer_and_manifest_are_registry_errors(tmp_path):
    reg = Registry(tmp_path / "registry")
    version = promote_export(reg, fake_export(tmp_path, "a"))
    reg.champion_path.write_text('["v0001"]')
    with pytest.raises(RegistryError, match=r"champion.json: unreadable champion pointer \(TypeError"):
        reg.champion()
    manifest_path = reg.version_dir(version) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["onnx/embedder.json"] = {"sha256": "0" * 64}  # no size
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(RegistryError, match=r"unreadable manifest .*'files' must map each path"):
        reg.verify(version)


def test_a_single_file_source_is_copied_into_the_version(tmp_path):
    reg = Registry(tmp_path / "registry")
    decision = tmp_path / "decision.json"
    decision.write_text('{"passed": true}')
    version = reg.add_version(
        {"onnx": fake_export(tmp_path, "a"), "gate/decision.json": decision}, metadata={}, who="t", reason="t"
    )
    assert reg.verify(version)["files"]["gate/decision.json"]["size"] == len('{"passed": true}')


def test_rollback_on_a_missing_registry_creates_nothing(tmp_path):
    with pytest.raises(RegistryError, match="has no champion yet .*EMBEDGATE_REGISTRY the right folder"):
        Registry(tmp_path / "typo").rollback()
    assert not (tmp_path / "typo").exists()
