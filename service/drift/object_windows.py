"""Drift windows on object storage (`EMBEDGATE_DRIFT_DIR=s3://bucket/drift`): the same windows as on a folder,
written with conditional puts instead of appends and renames.

    s3://bucket/drift/windows/<start>-h<host>-p<pid>-r<writer id>-<version>.jsonl.part   open: rewritten whole
    s3://bucket/drift/windows/<start>-h<host>-p<pid>-r<writer id>-<version>.jsonl        sealed: created once

Object stores cannot append, so a writer keeps its open window's rows in memory and re-uploads the whole `.part`
every flush interval (`EMBEDGATE_DRIFT_FLUSH_INTERVAL_S`, also when idle: that upload is its heartbeat), each
time with If-Match on the etag of its own previous upload. Sealing creates the `.jsonl` with If-None-Match: * and
then deletes the `.part`. A window is at most ~1 MB (500 rows), so the re-uploads are cheap; a crash loses the rows
of at most one flush interval (on a folder: none written).

A dead replica's open window (on any host) is sealed by whoever sees it stale, i.e. not updated for the lease
(`lease_s`, 6 flush intervals): `seal_stale_parts` reads it with its etag, claims it by rewriting it with If-Match
on that etag (adding a claim line), creates the sealed window from the bytes it read, and deletes the `.part`.
Why this cannot lose or duplicate a row, even when the "dead" writer was only stalled: the claim succeeds only if
the writer has not uploaded since the read, so the sealed window holds exactly the writer's last upload; the
writer's next upload then fails its If-Match (the claim changed the etag, or the `.part` is gone) and it moves the
rows it had not uploaded yet into a new window. A live writer uploads at least every flush interval, so it is
never stale. A sealer killed after its claim leaves a claimed `.part` that the next sealer finishes.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Sequence
from typing import Any

from service import object_store
from service.drift.settings import LEASE_FLUSHES, DriftSettingsError
from service.drift.windows import (
    PART_SUFFIX,
    SEALED_SUFFIX,
    WINDOW_NAME,
    CapturedRow,
    host_label,
    window_name,
)

WINDOWS = "windows/"
CLAIM_KEY = (
    "_claimed_by"  # the claim line a sealer appends to a stale `.part` (never part of a sealed window)
)


class ObjectWindowWriter:
    """`WindowWriter`'s interface (append, seal, close, tick) on an object store. Not thread-safe: the capture's
    single writer thread owns it."""

    def __init__(
        self,
        url: str,
        window_rows: int,
        keep_windows: int,
        flush_interval_s: float,
        pid: int | None = None,
        host: str | None = None,
        store: Any = None,
    ) -> None:
        for name, value, low in (("window_rows", window_rows, 1), ("keep_windows", keep_windows, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
        self.url = url
        self.store = store if store is not None else object_store.open_store(url, "EMBEDGATE_DRIFT_DIR")
        self.window_rows = window_rows
        self.keep_windows = keep_windows
        self.flush_interval_s = flush_interval_s
        self.pid = os.getpid() if pid is None else pid
        self.host = host_label(host)
        self.writer_id = secrets.token_hex(4)
        self.sealed_count = 0
        self.deleted_count = 0
        self.taken_over = 0  # windows another host sealed under this writer (it was stalled past the lease)
        self._lines: list[bytes] = []
        self._uploaded = 0  # rows in the last successful upload of the open window
        self._etag: str | None = None  # that upload's etag (None: not uploaded yet)
        self._name: str | None = None
        self._version: str | None = None
        self._last_upload = 0.0
        self._started = ""
        self.repairs = seal_stale_parts(self.store, self.lease_s)

    @property
    def lease_s(self) -> float:
        return LEASE_FLUSHES * self.flush_interval_s

    @property
    def current_rows(self) -> int:
        return len(self._lines)

    def append(self, rows: Sequence[CapturedRow]) -> None:
        for row in rows:
            if self._name is not None and row.model_version != self._version:
                self.seal()  # a hot swap: the new version's rows go to a window of their own
            if self._name is None:
                self._open(row.model_version)
            self._lines.append((json.dumps(row.to_dict(), separators=(",", ":")) + "\n").encode())
            if len(self._lines) >= self.window_rows:
                self.seal()
        # no upload here: the capture calls `tick` after each batch, so a store error is counted as a failed
        # upload, never as lost rows (they stay in memory for the next tick)

    def tick(self) -> None:
        """Upload the open window when a flush interval has passed since the last upload (new rows or not)."""
        if self._name is not None and time.time() - self._last_upload >= self.flush_interval_s:
            self._upload()

    def seal(self) -> str | None:
        """Create the sealed window from every row of the open one; returns its key (None: nothing to seal)."""
        if self._name is None:
            return None
        name, lines, uploaded, etag = self._name, self._lines, self._uploaded, self._etag
        self._reset()
        if not lines:
            if etag is not None:
                object_store.delete(self.store, WINDOWS + name + PART_SUFFIX)
            return None
        key = WINDOWS + name + SEALED_SUFFIX
        if not object_store.create(self.store, key, b"".join(lines)):
            # A sealer took the window after this writer's last upload: those rows are sealed; the rest move.
            self.taken_over += 1
            if len(lines) == uploaded:
                return None
            self._open(self._version_of(name))
            self._lines = lines[uploaded:]
            return self.seal()
        if etag is not None:
            object_store.delete(self.store, WINDOWS + name + PART_SUFFIX)
        self.sealed_count += 1
        self.deleted_count += rotate(self.store, self.keep_windows)
        return key

    def close(self) -> None:
        self.seal()

    # ---- internals ----
    def _upload(self) -> None:
        etag = object_store.put_if(
            self.store, WINDOWS + self._name + PART_SUFFIX, b"".join(self._lines), self._etag
        )
        self._last_upload = time.time()
        if etag is not None:
            self._etag, self._uploaded = etag, len(self._lines)
            return
        # Claimed by a sealer (this writer was stalled past the lease): the rows of the last upload are sealed
        # there; the rows since go into a new window.
        self.taken_over += 1
        rest, version = self._lines[self._uploaded :], self._version
        self._reset()
        if rest:
            self._open(version)
            self._lines = rest
            self._upload()

    def _open(self, version: str) -> None:
        self._name, self._started = window_name(version, self.host, self.pid, self.writer_id, self._started)
        self._version = version
        self._lines, self._uploaded, self._etag, self._last_upload = [], 0, None, 0.0

    def _reset(self) -> None:
        self._name, self._version, self._lines, self._uploaded, self._etag = None, None, [], 0, None

    @staticmethod
    def _version_of(name: str) -> str:
        return WINDOW_NAME.match(name)["version"]


def seal_stale_parts(store: Any, lease_s: float, now: float | None = None) -> list[str]:
    """Seal every open window (any host) not updated for `lease_s` seconds, and finish windows a killed sealer
    claimed; returns what was done. A window updated within the lease is never touched."""
    now = time.time() if now is None else now
    done = []
    for meta in object_store.listing(store, WINDOWS):
        key = meta["path"]
        if not key.endswith(PART_SUFFIX) or now - meta["last_modified"].timestamp() < lease_s:
            continue
        found = object_store.get(store, key)
        if found is None:  # its writer or another sealer sealed it meanwhile
            continue
        payload, etag = found
        rows = _without_claim(payload)
        if rows == payload:  # not claimed yet: claim it, only if the writer has not uploaded since the read
            claim = json.dumps({CLAIM_KEY: host_label(), "at": now}).encode() + b"\n"
            if object_store.put_if(store, key, payload + claim, etag) is None:
                continue  # the writer is alive after all (or another sealer claimed it): leave it
        sealed = key[: -len(PART_SUFFIX)] + SEALED_SUFFIX
        if rows and object_store.create(store, sealed, rows):
            done.append(f"sealed the stale window {sealed} ({len(rows.splitlines())} rows)")
        object_store.delete(store, key)
    return done


def _without_claim(payload: bytes) -> bytes:
    """The window's rows: `payload` without a trailing claim line."""
    lines = payload.splitlines(keepends=True)
    if lines and lines[-1].startswith(b'{"' + CLAIM_KEY.encode() + b'"'):
        return b"".join(lines[:-1])
    return payload


def sealed_keys(store: Any) -> list[str]:
    """The sealed windows' keys, oldest first (names start with their UTC start time)."""
    return sorted(
        key
        for key in object_store.keys(store, WINDOWS)
        if key.endswith(SEALED_SUFFIX) and WINDOW_NAME.match(key[len(WINDOWS) : -len(SEALED_SUFFIX)])
    )


def rotate(store: Any, keep_windows: int) -> int:
    """Delete the oldest sealed windows beyond `keep_windows` (every writer does; deleting twice is harmless)."""
    keys = sealed_keys(store)
    stale = keys[: max(len(keys) - keep_windows, 0)]
    object_store.delete(store, stale)
    return len(stale)


def object_writer_for(settings: Any) -> ObjectWindowWriter:
    """The capture's writer for an object-store drift folder; a store it cannot open stops start-up."""
    try:
        return ObjectWindowWriter(
            str(settings.dir), settings.window_rows, settings.keep_windows, settings.flush_interval_s
        )
    except DriftSettingsError:
        raise
    except Exception as err:  # the store is unreachable or refuses the credentials
        raise DriftSettingsError(
            f"EMBEDGATE_DRIFT_DIR={settings.dir}: cannot use the object store ({type(err).__name__}: {err}); "
            f"check the URL and the AWS_* environment, or set EMBEDGATE_DRIFT_SAMPLE_RATE=0 to serve without "
            f"drift capture"
        ) from None
