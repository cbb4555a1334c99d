"""Issue 31 item 8: `embedgate embed` on Ray as a user meets it. No cluster: one line with the fix, exit 2. The
default shard size spreads a small corpus over every actor. A run stopped at 60% keeps the shards it finished and
leaves no Ray process behind; the next run resumes from them. A successful run prints no error-level line."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gates.cli import main
from gates.reembed import auto_shard_size, embed_corpus, read_corpus
from service.registry.registry import Registry
from tests.conftest import TINY_WORDS
from tests.service.serving import REPO_ROOT, promote

TEXTS = 6000


@pytest.fixture
def ray_tmp():
    """Ray's session folder: short (its socket paths must fit in 107 bytes) and removed afterwards."""
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="egray-", dir="/tmp")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def registry(tmp_path_factory, tiny_exports) -> Registry:
    registry = Registry(tmp_path_factory.mktemp("reembed-ray") / "registry")
    promote(registry, tiny_exports["a"])
    return registry


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    rng = random.Random(11)
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    rows = [
        {"id": f"doc-{i}", "text": " ".join(rng.choices(TINY_WORDS, k=rng.randint(20, 120)))}
        for i in range(TEXTS)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_no_ray_cluster_is_one_line_with_the_fix_and_exit_2(registry, corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "ray"))  # no cluster recorded there
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    argv = ["embed", str(corpus), "--version", "v0001", "--out", str(tmp_path / "out")]
    assert main([*argv, "--registry", str(registry.root), "--ray-address", "auto"]) == 2
    err = [
        line
        for line in capsys.readouterr().err.splitlines()
        if line.strip() and not line.startswith("embed v0001:")
    ]
    assert len(err) == 1 and err[0].startswith("error: --ray-address auto: no Ray cluster answered"), err
    assert "`ray start --head`" in err[0] and "--ray-address local" in err[0]


def test_the_default_shard_size_gives_every_actor_work_and_a_kill_something_to_keep():
    assert auto_shard_size(2369) == 75  # 32 shards, where one 4096-row shard left a second actor idle
    assert auto_shard_size(100) == 64 and auto_shard_size(10_000_000) == 4096
    assert auto_shard_size(TEXTS) == 188


def _ray_processes(marker: str) -> list[str]:
    """Every live process whose environment carries `marker` (the command's and all it started, Ray's too)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            status = (proc / "status").read_text()
        except OSError:
            continue
        if marker.encode() in environ and "\nState:\tZ" not in status:
            found.append(f"{proc.name} {(proc / 'cmdline').read_bytes()[:80]!r}")
    return found


@pytest.mark.slow
@pytest.mark.integration
def test_a_ray_run_stopped_at_60_percent_keeps_its_shards_stops_ray_and_resumes(
    registry, corpus, tmp_path, ray_tmp
):
    out = tmp_path / "out"
    marker = f"EMBEDGATE_TEST_RUN={os.getpid()}-{time.time_ns()}"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        marker.split("=")[0]: marker.split("=")[1],
        "RAY_TMPDIR": ray_tmp,
    }
    env.pop("RAY_ADDRESS", None)
    argv = [sys.executable, "-m", "gates.cli", "embed", str(corpus), "--version", "v0001", "--out", str(out)]
    argv += ["--registry", str(registry.root), "--ray-address", "local", "--workers", "2"]
    shards = -(-TEXTS // auto_shard_size(TEXTS))
    log = tmp_path / "embed.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(argv, env=env, stdout=sink, stderr=sink, start_new_session=True)
    started = time.monotonic()
    try:
        while time.monotonic() - started < 300 and process.poll() is None:
            if len(list((out / "shards").glob("part-*"))) >= 0.6 * shards:
                break
            time.sleep(0.05)
        at_kill = len(list((out / "shards").glob("part-*")))
        assert process.poll() is None, f"the run ended before it was stopped:\n{log.read_text()[-3000:]}"
        process.send_signal(signal.SIGTERM)  # `kill PID`, what a scheduler or a user sends
        stopped = time.monotonic()
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert not (out / "manifest.json").exists(), (
        f"the run finished before it could be stopped:\n{log.read_text()}"
    )
    assert at_kill >= 0.6 * shards
    while _ray_processes(marker) and time.monotonic() - stopped < 30:
        time.sleep(0.5)
    left = _ray_processes(marker)
    print(
        f"stopped at {at_kill}/{shards} shards; exit {process.returncode}; "
        f"{time.monotonic() - stopped:.1f} s until no process of the run was left"
    )
    assert not left, f"processes of the stopped run still alive: {left}"
    assert process.returncode == 130
    kept = len(list((out / "shards").glob("part-*")))
    assert kept >= at_kill and not list((out / "shards").glob(".tmp-*"))

    result = embed_corpus(read_corpus(corpus), registry.root, "v0001", out, threads=1)  # resumed locally
    assert result.skipped_shards == kept and result.shards == shards
    table = pq.read_table(out / "shards")
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == TEXTS


@pytest.mark.slow
@pytest.mark.integration
def test_a_successful_ray_run_spreads_over_both_actors_and_prints_no_error_line(
    registry, corpus, tmp_path, ray_tmp
):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "RAY_TMPDIR": ray_tmp}
    env.pop("RAY_ADDRESS", None)
    argv = [sys.executable, "-m", "gates.cli", "embed", str(corpus), "--version", "v0001"]
    argv += ["--out", str(tmp_path / "out"), "--registry", str(registry.root), "--ray-address", "local"]
    done = subprocess.run([*argv, "--workers", "2"], env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "embedded 6000 texts with v0001" in done.stdout and "(ray," in done.stdout
    lines = output.replace("\r", "\n").splitlines()
    # Python logging's "ERROR", and Ray's C++ log lines: "[2026-12-07 19:06:46,361 E 29499 29499] core_worker.cc..."
    errors = [line for line in lines if re.search(r"\bERROR\b|^\[[^]]* E \d+ \d+\]", line)]
    assert not errors, errors
    warnings = [line for line in lines if re.search(r"\bWARNING\b|^\[[^]]* W \d+ \d+\]", line)]
    assert not [w for w in warnings if re.search(r"actor|block|progress bar", w, re.I)], warnings
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert len(manifest["shards"]) == 32 and manifest["total_rows"] == TEXTS
