"""Drift capture: settings, descriptors, window files (seal, rotate, read back, recover) and the non-blocking
`record` (sampling, drops when full, errors counted and never raised)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from service.drift.capture import DriftCapture
from service.drift.descriptors import DESCRIPTOR_NAMES, describe_text, describe_texts
from service.drift.settings import DriftSettings, DriftSettingsError
from service.drift.windows import (
    CapturedRow,
    WindowWriter,
    list_windows,
    read_window,
    rotate,
    seal_orphaned_parts,
)


def unit_rows(count: int, dim: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def settings_for(tmp_path, **overrides) -> DriftSettings:
    return DriftSettings(dir=tmp_path / "drift", **{"sample_rate": 1.0, "window_rows": 20, **overrides})


def captured(count: int, version: str = "v0001", dim: int = 8) -> list[CapturedRow]:
    vectors = unit_rows(count, dim)
    return [
        CapturedRow(1.0 + i, version, dim, describe_text(f"text {i}", 4, False), vectors[i])
        for i in range(count)
    ]


# ---- settings ----
def test_settings_come_from_embedgate_drift_variables(tmp_path):
    settings = DriftSettings.from_env(
        {
            "EMBEDGATE_DRIFT_SAMPLE_RATE": "0.25",
            "EMBEDGATE_DRIFT_DIR": str(tmp_path),
            "EMBEDGATE_DRIFT_WINDOW_ROWS": "100",
            "EMBEDGATE_DRIFT_ALERT_WINDOWS": " ",
            "EMBEDGATE_DRIFT_MONITOR": "false",
        }
    )
    assert (settings.sample_rate, settings.dir, settings.window_rows) == (0.25, tmp_path, 100)
    assert settings.monitor is False
    assert settings.alert_windows == 3  # blank means unset
    assert settings.windows_dir == tmp_path / "windows"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("EMBEDGATE_DRIFT_SAMPLE_RATE", "1.5"),
        ("EMBEDGATE_DRIFT_SAMPLE_RATE", "often"),
        ("EMBEDGATE_DRIFT_WINDOW_ROWS", "9"),
        ("EMBEDGATE_DRIFT_KEEP_WINDOWS", "0"),
    ],
)
def test_bad_settings_name_the_variable_and_the_value(variable, value):
    with pytest.raises(DriftSettingsError, match=rf"{variable}='{value}'.*Fix or unset"):
        DriftSettings.from_env({variable: value})


def test_sample_rate_zero_switches_capture_off(tmp_path):
    assert (
        DriftCapture.from_env({"EMBEDGATE_DRIFT_SAMPLE_RATE": "0", "EMBEDGATE_DRIFT_DIR": str(tmp_path)})
        is None
    )
    assert not (tmp_path / "windows").exists()
    with pytest.raises(ValueError, match="sample_rate > 0.*from_env"):
        DriftCapture(DriftSettings(sample_rate=0.0, dir=tmp_path))


# ---- descriptors ----
def test_descriptors_of_known_texts():
    plain = describe_text("Rent is 42 dollars.", token_count=9, truncated=False)
    assert plain["tokens"] == 9 and plain["truncated"] == 0 and plain["emptyish"] == 0
    assert plain["digit_ratio"] == pytest.approx(2 / 16) and plain["punct_ratio"] == pytest.approx(1 / 16)
    assert plain["ascii_letter_share"] == pytest.approx(13 / 16) and plain["non_latin_share"] == 0
    cyrillic = describe_text("Арендная плата", token_count=30, truncated=True)
    assert (
        cyrillic["non_latin_share"] == 1.0
        and cyrillic["ascii_letter_share"] == 0
        and cyrillic["truncated"] == 1
    )
    assert describe_text("café résumé", 5, False)["non_latin_share"] == 0  # accented Latin is still Latin
    for junk in ("   ", "", "🙂 --- !!", "\t\n"):
        assert describe_text(junk, 2, False)["emptyish"] == 1, junk
    assert set(plain) == set(DESCRIPTOR_NAMES)


def test_describe_texts_refuses_misaligned_inputs():
    with pytest.raises(ValueError, match=r"one entry per text; got lengths 2, 1, 2"):
        describe_texts(["a", "b"], [3], [False, False])


# ---- window files ----
def test_a_window_is_sealed_when_full_and_reads_back_exactly(tmp_path):
    writer = WindowWriter(tmp_path, window_rows=5, keep_windows=10)
    rows = captured(12)
    writer.append(rows)
    windows = list_windows(tmp_path)
    assert len(windows) == 2 and writer.current_rows == 2  # 5 + 5 sealed, 2 in the open .part
    assert len(list(tmp_path.glob("*.part"))) == 1  # the open window exists but is not listed
    data = read_window(windows[0], DESCRIPTOR_NAMES)
    assert data.rows == 5 and data.bad_lines == 0 and data.info.model_version == "v0001"
    np.testing.assert_array_equal(np.stack(data.vectors), np.stack([row.embedding for row in rows[:5]]))
    assert data.descriptors["tokens"].tolist() == [4.0] * 5
    writer.close()
    assert len(list_windows(tmp_path)) == 3 and not list(tmp_path.glob("*.part"))


def interleaved(versions: tuple[str, ...], per_version: int, request_rows: int) -> list[list[CapturedRow]]:
    """Requests of `request_rows` rows taking turns between `versions` (pinned and default clients during a
    cutover), `per_version` rows each; row i of a version has time 1 + i."""
    rows = {version: captured(per_version, version) for version in versions}
    return [
        rows[version][start : start + request_rows]
        for start in range(0, per_version, request_rows)
        for version in versions
    ]


def test_versions_never_mix_and_each_fills_its_own_window(tmp_path):
    """Issue 31 item 6: requests of two versions taking turns used to seal the window at each change of version
    (windows of 3 rows, never judged); each version's window now fills on its own."""
    writer = WindowWriter(tmp_path, window_rows=10, keep_windows=100)
    for request in interleaved(("v0001", "v0002"), per_version=25, request_rows=3):
        writer.append(request)
    sealed = [(w.model_version, read_window(w, DESCRIPTOR_NAMES)) for w in list_windows(tmp_path)]
    assert (
        sorted((version, data.rows) for version, data in sealed) == [("v0001", 10)] * 2 + [("v0002", 10)] * 2
    )
    for version in ("v0001", "v0002"):  # every row once, in order, in its own version's windows
        times = [t for v, data in sealed if v == version for t in data.times.tolist()]
        assert times == [1.0 + i for i in range(20)], version
    assert writer.open_rows() == {"v0001": 5, "v0002": 5}
    writer.close()
    rows = sorted(read_window(w, DESCRIPTOR_NAMES).rows for w in list_windows(tmp_path))
    assert rows == [5, 5] + [10] * 4  # the partial ones sealed on close
    assert not list(tmp_path.glob("*.part"))


def test_the_heartbeat_keeps_every_versions_open_window_alive(tmp_path):
    writer = WindowWriter(tmp_path, window_rows=50, keep_windows=100, host="replica-a", flush_interval_s=0.1)
    writer.append(captured(3, "v0001") + captured(2, "v0002"))
    old = time.time() - 60
    for part in tmp_path.glob("*.part"):
        os.utime(part, (old, old))
    time.sleep(0.15)
    writer.tick()  # touches both versions' windows, not only the one written last
    assert seal_orphaned_parts(tmp_path, own_pid=os.getpid(), host="judge", lease_s=writer.lease_s) == []
    writer.close()


def test_interleaved_pinned_and_default_requests_through_record_fill_whole_windows(tmp_path):
    capture = DriftCapture(settings_for(tmp_path, window_rows=10))
    for request in interleaved(("v0001", "v0002"), per_version=30, request_rows=3):
        vectors = np.stack([row.embedding for row in request])
        texts = [f"text {row.time}" for row in request]
        capture.record(
            texts, vectors, [4] * len(request), [False] * len(request), request[0].model_version, 8
        )
    assert capture.close().written == 60
    sealed = [
        (w.model_version, read_window(w, DESCRIPTOR_NAMES).rows)
        for w in list_windows(tmp_path / "drift" / "windows")
    ]
    assert sorted(sealed) == [("v0001", 10)] * 3 + [("v0002", 10)] * 3


def test_only_the_last_k_windows_are_kept(tmp_path):
    writer = WindowWriter(tmp_path, window_rows=2, keep_windows=3)
    writer.append(captured(20))
    assert len(list_windows(tmp_path)) == 3 and writer.deleted_count == 7
    assert rotate(tmp_path, 1) == 2 and len(list_windows(tmp_path)) == 1


def test_a_torn_line_is_skipped_and_counted(tmp_path):
    writer = WindowWriter(tmp_path, window_rows=3, keep_windows=3)
    writer.append(captured(3))
    info = list_windows(tmp_path)[0]
    with open(info.path, "a", encoding="utf-8") as handle:
        handle.write('{"time": 1.0, "model_version": "v0001", "dim": 8, "embedding_b64": "AAAA')
    data = read_window(info, DESCRIPTOR_NAMES)
    assert (data.rows, data.bad_lines) == (3, 1)


def test_a_line_without_a_time_is_skipped_and_counted(tmp_path):
    writer = WindowWriter(tmp_path, window_rows=3, keep_windows=3)
    writer.append(captured(3))
    info = list_windows(tmp_path)[0]
    lines = info.path.read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[0])
    del record["time"]
    info.path.write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n", encoding="utf-8")
    data = read_window(info, DESCRIPTOR_NAMES)
    assert (data.rows, data.bad_lines) == (2, 1)


def test_a_dead_processs_open_window_is_sealed_by_the_next_writer(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    crashed = WindowWriter(tmp_path, window_rows=100, keep_windows=5, pid=dead_pid)
    crashed.append(captured(4))  # left open: the process "died" before sealing
    assert list_windows(tmp_path) == []
    WindowWriter(tmp_path, window_rows=100, keep_windows=5)
    assert [read_window(w, DESCRIPTOR_NAMES).rows for w in list_windows(tmp_path)] == [4]


def test_embeddings_at_a_smaller_dim_are_the_renormalised_prefix(tmp_path):
    writer = WindowWriter(tmp_path, window_rows=10, keep_windows=3)
    writer.append(
        captured(3, dim=8) + [CapturedRow(9.0, "v0001", 4, describe_text("x", 3, False), unit_rows(1, 4)[0])]
    )
    writer.close()
    data = read_window(list_windows(tmp_path)[0], DESCRIPTOR_NAMES)
    matrix, used = data.embeddings_at(6)
    assert used.tolist() == [True, True, True, False]  # the row served at dim 4 cannot be compared at 6
    expected = np.stack(data.vectors[:3])[:, :6]
    np.testing.assert_allclose(matrix, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-6)


def test_writer_refuses_bad_sizes_and_unsafe_version_names(tmp_path):
    with pytest.raises(ValueError, match=r"window_rows: expected an integer >= 1, got 0"):
        WindowWriter(tmp_path, window_rows=0, keep_windows=3)
    with pytest.raises(ValueError, match=r"model_version '\.\./x' cannot be part of a file name"):
        WindowWriter(tmp_path, window_rows=5, keep_windows=3).append(captured(1, version="../x"))


# ---- record(): sampling, queueing, never raising ----
def test_record_writes_every_text_at_rate_one(tmp_path):
    capture = DriftCapture(settings_for(tmp_path, window_rows=10))
    vectors = unit_rows(25, 8)
    capture.record([f"q{i}" for i in range(25)], vectors, [5] * 25, [False] * 25, "v0001", 8)
    stats = capture.close()
    assert (stats.offered, stats.sampled, stats.written, stats.dropped, stats.errors) == (25, 25, 25, 0, 0)
    windows = list_windows(tmp_path / "drift" / "windows")
    assert [read_window(w, DESCRIPTOR_NAMES).rows for w in windows] == [
        10,
        10,
        5,
    ]  # the partial one sealed on close
    np.testing.assert_array_equal(np.stack(read_window(windows[0], DESCRIPTOR_NAMES).vectors), vectors[:10])


def test_record_samples_at_the_configured_rate(tmp_path):
    capture = DriftCapture(settings_for(tmp_path, sample_rate=0.1, window_rows=10_000), seed=3)
    for _ in range(200):
        capture.record(["a"] * 10, unit_rows(10, 4), [3] * 10, [False] * 10, "v0001", 4)
    stats = capture.close()
    assert stats.offered == 2000 and 140 <= stats.sampled <= 260 and stats.written == stats.sampled


def test_a_full_queue_drops_and_counts_instead_of_waiting(tmp_path, monkeypatch):
    capture = DriftCapture(settings_for(tmp_path, queue_size=2))
    release = threading.Event()
    original = capture._writer.append
    monkeypatch.setattr(capture._writer, "append", lambda rows: (release.wait(10), original(rows)))
    for _ in range(6):  # one is taken by the stuck writer, two wait in the queue, the rest are dropped
        capture.record(["a", "b"], unit_rows(2, 4), [3, 3], [False, False], "v0001", 4)
    stats = capture.stats()
    assert stats.dropped >= 4 and stats.sampled + stats.dropped == 12
    release.set()
    assert capture.close().written == stats.sampled


def test_bad_calls_are_counted_never_raised(tmp_path):
    capture = DriftCapture(settings_for(tmp_path))
    capture.record(["a", "b"], unit_rows(3, 4), [3, 3], [False, False], "v0001", 4)  # 3 vectors for 2 texts
    capture.record(["a"], unit_rows(1, 4), [3], [False], "v0001", 8)  # dim does not match the vectors
    capture.record(["a"], None, [3], [False], "v0001", 4)  # not an array at all
    capture.record(["a"], unit_rows(1, 4), [3], [False], "v0001", 4)  # one good call
    stats = capture.close()
    assert stats.errors == 3 and stats.written == 1


def test_record_after_close_is_a_no_op(tmp_path):
    capture = DriftCapture(settings_for(tmp_path))
    capture.close()
    capture.record(["a"], unit_rows(1, 4), [3], [False], "v0001", 4)
    assert capture.stats().offered == 0 and capture.close().errors == 0


def test_an_unwritable_drift_dir_stops_start_up_with_the_fix(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(
        DriftSettingsError, match=r"EMBEDGATE_DRIFT_DIR=.*cannot create .*EMBEDGATE_DRIFT_SAMPLE_RATE=0"
    ):
        DriftCapture(DriftSettings(dir=tmp_path / "file" / "drift", sample_rate=0.1))


def test_importing_and_capturing_loads_no_heavy_modules(tmp_path):
    """The capture runs in the served process: no torch, no Evidently or pandas until a drift is judged."""
    code = (
        "import sys, numpy as np\n"
        "from service.drift.capture import DriftCapture\n"
        "from service.drift.settings import DriftSettings\n"
        "import service.drift.monitor, service.drift.runner, service.drift.gauges\n"
        f"c = DriftCapture(DriftSettings(dir={str(tmp_path)!r}, sample_rate=1.0, window_rows=10))\n"
        "c.record(['a b c'], np.ones((1, 4), np.float32), [5], [False], 'v0001', 4)\n"
        "assert c.close().written == 1\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'evidently', 'pandas', 'sklearn') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_gauges_of_a_retired_version_are_dropped():
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry

    from service.drift.gauges import drift_gauges

    registry = CollectorRegistry()
    gauges = drift_gauges(registry)
    for version in ("v0001", "v0002"):
        signal = SimpleNamespace(name="embedding", score=0.6, threshold=0.7)
        gauges.publish(
            SimpleNamespace(
                model_version=version, signals=[signal], drifted=False, rows=500, computed_at_unix=1.8e9
            ),
            consecutive=0,
            alerting=False,
        )
    gauges.forget_versions_except({"v0002"})
    assert (
        registry.get_sample_value("embedgate_drift_score", {"model_version": "v0001", "signal": "embedding"})
        is None
    )
    assert registry.get_sample_value("embedgate_drift_window_rows", {"model_version": "v0002"}) == 500


def test_two_hosts_sharing_one_drift_folder_never_seal_each_others_windows(tmp_path):
    """Replica A (another host, a pid that means nothing here) is writing; replica B starts on this host. B must
    not seal A's open window, and every row either wrote is read back exactly once."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    a = WindowWriter(tmp_path, window_rows=50, keep_windows=100, pid=int(dead.stdout), host="replica-a")
    a.append(captured(7))
    open_part = next(tmp_path.glob("*.jsonl.part"))
    b = WindowWriter(tmp_path, window_rows=4, keep_windows=100, pid=int(dead.stdout), host="replica-b")
    assert open_part.exists() and list_windows(tmp_path) == []  # A's live window left alone (same pid, too)
    b.append(captured(10))
    a.append(captured(5))  # A keeps writing into its own window
    b.close()
    a.close()
    windows = list_windows(tmp_path)
    rows = {
        name: sum(read_window(w, DESCRIPTOR_NAMES).rows for w in windows if f"-h{name}-" in w.window_id)
        for name in ("replica_a", "replica_b")
    }
    assert rows == {"replica_a": 12, "replica_b": 10}
    assert not list(tmp_path.glob("*.part"))
    # the same host's dead writer is still sealed by the next writer there
    crashed = WindowWriter(tmp_path, window_rows=50, keep_windows=100, pid=int(dead.stdout), host="replica-b")
    crashed.append(captured(3))
    WindowWriter(tmp_path, window_rows=50, keep_windows=100, host="replica-b")
    assert sum(read_window(w, DESCRIPTOR_NAMES).rows for w in list_windows(tmp_path)) == 25


def test_a_drift_url_stays_a_url_and_an_unusable_one_stops_start_up(tmp_path):
    settings = DriftSettings.from_env(
        {"EMBEDGATE_DRIFT_DIR": "s3://bucket/drift/", "EMBEDGATE_DRIFT_CACHE_DIR": str(tmp_path)}
    )
    assert settings.on_object_store and settings.dir == "s3://bucket/drift"  # not folded into s3:/bucket
    assert settings.windows_dir == tmp_path / "windows" and settings.lease_s == 60  # the judge's local copy
    assert not DriftSettings(dir=f"file://{tmp_path}").on_object_store
    with pytest.raises(
        DriftSettingsError, match=r"EMBEDGATE_DRIFT_DIR=nosuch://b/x: cannot use the object store"
    ):
        DriftCapture(DriftSettings(dir="nosuch://b/x", sample_rate=1.0))
    with pytest.raises(DriftSettingsError, match=r"EMBEDGATE_DRIFT_FLUSH_INTERVAL_S='0'.*Fix or unset"):
        DriftSettings.from_env({"EMBEDGATE_DRIFT_FLUSH_INTERVAL_S": "0"})
