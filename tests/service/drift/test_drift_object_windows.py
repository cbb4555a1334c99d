"""Drift windows of several replicas in one place: an S3 drift location (moto on 127.0.0.1, through obstore as a
replica would use it) and a shared folder. No row lost or written twice, no live window sealed by another writer,
and a dead replica's open window sealed by another host once it is stale (the lease)."""

from __future__ import annotations

import json
import os
import threading
import time

import obstore
import pytest

from service.drift.capture import DriftCapture
from service.drift.descriptors import DESCRIPTOR_NAMES
from service.drift.object_mirror import RunLease
from service.drift.object_windows import CLAIM_KEY, ObjectWindowWriter, seal_stale_parts, sealed_keys
from service.drift.settings import DriftSettings
from service.drift.windows import WindowWriter, list_windows, read_window, seal_orphaned_parts
from service.storage import object_store
from tests.service.drift.test_drift_capture import captured, interleaved, unit_rows

pytestmark = pytest.mark.integration


@pytest.fixture
def drift_url(s3_registry_url: str) -> str:
    """A drift location in the test's fresh bucket (beside the registry, as docs/deploy.md sets it up)."""
    return s3_registry_url.rsplit("/", 1)[0] + "/drift"


def _rows_by_window(store) -> dict[str, int]:
    return {key: len(object_store.get(store, key)[0].splitlines()) for key in sealed_keys(store)}


def _parts(store) -> list[str]:
    return [key for key in object_store.keys(store, "windows/") if key.endswith(".part")]


def test_two_replicas_write_into_one_s3_drift_location_and_lose_no_row(drift_url, tmp_path):
    settings = DriftSettings(dir=drift_url, sample_rate=1.0, window_rows=20, flush_interval_s=0.2)
    assert settings.on_object_store and settings.dir == drift_url  # kept as a URL
    replicas = [DriftCapture(settings), DriftCapture(settings)]
    sent = {0: 47, 1: 33}

    def serve(i: int) -> None:  # requests of 1-4 texts, as the route hands them over
        done, seed = 0, i * 1000
        while done < sent[i]:
            count = min(1 + seed % 4, sent[i] - done)
            texts = [f"text {done + j}" for j in range(count)]
            replicas[i].record(texts, unit_rows(count, 8, seed), [3] * count, [False] * count, "v0001", 8)
            done, seed = done + count, seed + 1
            time.sleep(0.01)

    threads = [threading.Thread(target=serve, args=(i,)) for i in sent]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = [capture.close() for capture in replicas]
    assert [s.written for s in stats] == [47, 33] and [s.errors for s in stats] == [0, 0]
    store = object_store.open_store(drift_url, "test")
    rows = _rows_by_window(store)
    assert sum(rows.values()) == 80, rows  # rows in == rows captured
    by_writer: dict[str, int] = {}
    for key, count in rows.items():
        writer = key.split("-r", 1)[1].split("-", 1)[0]  # the random writer id in the name
        by_writer[writer] = by_writer.get(writer, 0) + count
    assert sorted(by_writer.values()) == [33, 47]  # each window holds one writer's rows only
    assert _parts(store) == []  # both sealed their own open windows at shutdown


def test_a_dead_replicas_open_window_is_sealed_once_stale_a_live_one_never(drift_url):
    store = object_store.open_store(drift_url, "test")
    dead = ObjectWindowWriter(drift_url, 50, 100, flush_interval_s=0.3, host="replica-a", store=store)
    dead.append(captured(7))
    dead.tick()  # uploaded; then "killed": it never writes again
    time.sleep(3)
    # (its own start-up sweep uses its lease, 6 s: the dead window is not stale for it yet)
    live = ObjectWindowWriter(drift_url, 50, 100, flush_interval_s=1.0, host="replica-b", store=store)
    live.append(captured(5))
    live.tick()
    live_part = next(key for key in _parts(store) if "-hreplica_b-" in key)
    live_etag = object_store.get(store, live_part)[1]
    # lease 2 s: the dead window is 3 s old, the live one was just uploaded (S3 times have a 1 s grain)
    done = seal_stale_parts(store, lease_s=2.0)
    assert len(done) == 1 and "hreplica_a" in done[0] and "(7 rows)" in done[0], done
    assert object_store.get(store, live_part)[1] == live_etag  # the live window untouched
    assert [key for key in _parts(store)] == [live_part]
    live.append(captured(3))
    live.close()
    assert sorted(_rows_by_window(store).values()) == [7, 8]


def test_a_stalled_writer_that_wakes_after_its_window_was_sealed_moves_its_new_rows(drift_url):
    """The 'dead' writer was only stalled: its next upload fails the compare-and-swap, and the rows it had not
    uploaded go to a new window; nothing is lost or counted twice."""
    store = object_store.open_store(drift_url, "test")
    writer = ObjectWindowWriter(drift_url, 50, 100, flush_interval_s=3600, host="replica-a", store=store)
    writer.append(captured(4))
    writer.tick()  # the first upload is due at once
    writer.append(captured(2))
    writer.tick()  # kept in memory: the next upload is an hour away
    assert seal_stale_parts(store, lease_s=60, now=time.time() + 120)  # another host sees it stale
    writer.append(captured(3))
    writer.flush_interval_s = 0  # wake up: upload now
    writer.tick()
    assert writer.taken_over == 1
    writer.close()
    assert sorted(_rows_by_window(store).values()) == [4, 5] and _parts(store) == []


def test_on_s3_each_version_fills_its_own_window_while_requests_take_turns(drift_url):
    """Issue 31 item 6 on object storage: pinned and default clients on two versions, requests of 3 rows taking
    turns; every window holds one version and fills to `window_rows`, and the heartbeat uploads both."""
    store = object_store.open_store(drift_url, "test")
    writer = ObjectWindowWriter(drift_url, 10, 100, flush_interval_s=0.1, host="replica-a", store=store)
    for request in interleaved(("v0001", "v0002"), per_version=25, request_rows=3):
        writer.append(request)
        writer.tick()
    assert sorted(_rows_by_window(store).values()) == [10] * 4
    for key in sealed_keys(store):  # one version per window
        versions = {
            json.loads(line)["model_version"] for line in object_store.get(store, key)[0].splitlines()
        }
        assert versions == {key.rsplit("-", 1)[1].split(".", 1)[0]}, key
    time.sleep(0.15)
    writer.tick()
    assert sorted(key.rsplit("-", 1)[1] for key in _parts(store)) == ["v0001.jsonl.part", "v0002.jsonl.part"]
    assert writer.open_rows() == {"v0001": 5, "v0002": 5}
    writer.close()
    assert sorted(_rows_by_window(store).values()) == [5, 5] + [10] * 4 and _parts(store) == []


def test_a_window_claimed_by_a_killed_sealer_is_finished_by_the_next(drift_url):
    store = object_store.open_store(drift_url, "test")
    name = "windows/20260101T000000.000000Z-hreplica_a-p1-rabcd0123-v0001.jsonl"
    rows = b"".join(json.dumps({"time": i}).encode() + b"\n" for i in range(3))
    claim = json.dumps({CLAIM_KEY: "judge", "at": 0}).encode() + b"\n"
    obstore.put(store, name + ".part", rows + claim)  # claimed, then the sealer was killed
    assert seal_stale_parts(store, lease_s=60, now=time.time() + 120)
    assert object_store.get(store, name)[0] == rows  # the claim line is not part of the window
    assert _parts(store) == []


# ---- the same rules on a shared folder (NFS, EFS) ----
def test_on_a_folder_another_hosts_window_is_sealed_once_stale_a_live_one_never(tmp_path):
    dead = WindowWriter(tmp_path, window_rows=50, keep_windows=100, host="replica-a", flush_interval_s=1)
    dead.append(captured(7))
    live = WindowWriter(tmp_path, window_rows=50, keep_windows=100, host="replica-b", flush_interval_s=1)
    live.append(captured(5))
    dead_part = next(tmp_path.glob("*-hreplica_a-*.part"))
    old = time.time() - 60
    os.utime(dead_part, (old, old))  # no heartbeat for a minute: its host is gone
    # the judge on a third host; lease = 6 x 1 s
    sealed = seal_orphaned_parts(tmp_path, own_pid=os.getpid(), host="judge", lease_s=live.lease_s)
    assert len(sealed) == 1 and "-hreplica_a-" in sealed[0].name
    assert len(list(tmp_path.glob("*.part"))) == 1  # the live one, untouched
    dead.append(captured(2))  # it was only stalled: its window is gone, it opens a new one
    for writer in (dead, live):
        writer.close()
    rows = sorted(read_window(w, DESCRIPTOR_NAMES).rows for w in list_windows(tmp_path))
    assert rows == [2, 5, 7] and not list(tmp_path.glob("*.part"))


def test_on_a_folder_the_heartbeat_keeps_an_idle_window_alive(tmp_path):
    writer = WindowWriter(tmp_path, window_rows=50, keep_windows=100, host="replica-a", flush_interval_s=0.1)
    writer.append(captured(3))
    part = next(tmp_path.glob("*.part"))
    old = time.time() - 60
    os.utime(part, (old, old))
    time.sleep(0.15)
    writer.tick()  # the capture's writer thread calls this every flush interval, traffic or not
    assert seal_orphaned_parts(tmp_path, own_pid=os.getpid(), host="judge", lease_s=writer.lease_s) == []
    writer.close()


def test_one_judge_at_a_time_and_a_dead_judges_lease_expires(drift_url):
    store = object_store.open_store(drift_url, "test")
    first, second = RunLease(store, lease_s=60), RunLease(store, lease_s=60)
    assert first.acquire(wait=False)
    assert not second.acquire(wait=False)  # a monitor's pass skips; `embedgate drift` would wait
    first.release()
    assert second.acquire(wait=False)
    # the holder dies without releasing: its lease runs out, and the next judge takes it over
    obstore.put(store, ".run.lock", json.dumps({"holder": "dead", "expires_at": time.time() - 1}).encode())
    third = RunLease(store, lease_s=60)
    assert third.acquire(wait=False)
    second.release()  # a judge whose lease was taken over never releases the new holder's
    assert object_store.get(store, ".run.lock") is not None
    third.release()
    assert object_store.get(store, ".run.lock") is None


def test_a_long_pass_keeps_its_lease(drift_url):
    store = object_store.open_store(drift_url, "test")
    judge = RunLease(store, lease_s=1.5)
    assert judge.acquire(wait=False)
    with judge.kept():  # renewed every 0.5 s
        time.sleep(2.5)  # longer than the lease
        assert not RunLease(store, lease_s=1.5).acquire(wait=False)
    judge.release()
