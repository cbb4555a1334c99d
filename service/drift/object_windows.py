"""Drift windows on object storage (`EMBEDGATE_DRIFT_DIR=s3://bucket/drift`): the same windows as on a folder,
written with conditional puts instead of appends and renames.

    s3://bucket/drift/windows/<start>-h<host>-p<pid>-r<writer id>-<version>.jsonl.part   open: rewritten whole
    s3://bucket/drift/windows/<start>-h<host>-p<pid>-r<writer id>-<version>.jsonl        sealed: created once

Object stores cannot append, so a writer keeps its open windows' rows in memory (one open window per model
version, as on a folder) and re-uploads each whole `.part` every flush interval (`EMBEDGATE_DRIFT_FLUSH_INTERVAL_S`,
also when idle: that upload is its heartbeat), each time with If-Match on the etag of its own previous upload.
Sealing creates the `.jsonl` with If-None-Match: * and then deletes the `.part`. A window is at most ~1 MB (500 rows), so the re-uploads are cheap; a crash loses the rows
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
from dataclasses import dataclass, field
from typing import Any

from service.drift.settings import LEASE_FLUSHES, DriftSettingsError
from service.drift.windows import (
    PART_SUFFIX,
    SEALED_SUFFIX,
    WINDOW_NAME,
    CapturedRow,
    host_label,
    window_name,
)
from service.storage import object_store

WINDOWS = "windows/"
CLAIM_KEY = (
    "_claimed_by"  # the claim line a sealer appends to a stale `.part` (never part of a sealed window)
)


@dataclass
class _OpenObjectWindow:
    """One version's open window: its rows in memory, and what of them the last successful upload holds."""

    name: str
    lines: list[bytes] = field(default_factory=list)
    uploaded: int = 0  # rows in the last successful upload of the window
    etag: str | None = None  # that upload's etag (None: not uploaded yet)
    last_upload: float = 0.0


class ObjectWindowWriter:
    """`WindowWriter`'s interface (append, seal, close, tick) on an object store: one open window per model
    version, each filling on its own. Not thread-safe: the capture's single writer thread owns it."""

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
        self._open_windows: dict[str, _OpenObjectWindow] = {}
        self._started: dict[str, str] = {}  # each version's last window start (a new one must not reuse it)
        self.repairs = seal_stale_parts(self.store, self.lease_s)

    @property
    def lease_s(self) -> float:
        return LEASE_FLUSHES * self.flush_interval_s

    @property
    def current_rows(self) -> int:
        """Rows in the open windows, every version together."""
        return sum(len(window.lines) for window in self._open_windows.values())

    def open_rows(self) -> dict[str, int]:
        """Rows in each version's open window."""
        return {version: len(window.lines) for version, window in self._open_windows.items()}

    def append(self, rows: Sequence[CapturedRow]) -> None:
        for row in rows:
            version = row.model_version
            window = self._open_windows.get(version) or self._open(version)
            window.lines.append((json.dumps(row.to_dict(), separators=(",", ":")) + "\n").encode())
            if len(window.lines) >= self.window_rows:
                self.seal(version)
        # no upload here: the capture calls `tick` after each batch, so a store error is counted as a failed
        # upload, never as lost rows (they stay in memory for the next tick)

    def tick(self) -> None:
        """Upload each open window a flush interval after its last upload (new rows or not: the heartbeat)."""
        now = time.time()
        for version, window in list(self._open_windows.items()):
            if now - window.last_upload >= self.flush_interval_s:
                self._upload(version, window)

    def seal(self, version: str | None = None) -> list[str]:
        """Create the sealed window from every row of the open window of `version` (None: of every version);
        returns the sealed keys."""
        versions = list(self._open_windows) if version is None else [version]
        sealed = []
        for name in versions:
            window = self._open_windows.pop(name, None)
            if window is not None:
                sealed.extend(self._seal(name, window))
        return sealed

    def close(self) -> None:
        self.seal()

    # ---- internals ----
    def _seal(self, version: str, window: _OpenObjectWindow) -> list[str]:
        if not window.lines:
            if window.etag is not None:
                object_store.delete(self.store, WINDOWS + window.name + PART_SUFFIX)
            return []
        key = WINDOWS + window.name + SEALED_SUFFIX
        if not object_store.create(self.store, key, b"".join(window.lines)):
            # A sealer took the window after this writer's last upload: those rows are sealed; the rest move.
            self.taken_over += 1
            if len(window.lines) == window.uploaded:
                return []
            rest = self._open(version)
            rest.lines = window.lines[window.uploaded :]
            return self.seal(version)
        if window.etag is not None:
            object_store.delete(self.store, WINDOWS + window.name + PART_SUFFIX)
        self.sealed_count += 1
        self.deleted_count += rotate(self.store, self.keep_windows)
        return [key]

    def _upload(self, version: str, window: _OpenObjectWindow) -> None:
        etag = object_store.put_if(
            self.store, WINDOWS + window.name + PART_SUFFIX, b"".join(window.lines), window.etag
        )
        window.last_upload = time.time()
        if etag is not None:
            window.etag, window.uploaded = etag, len(window.lines)
            return
        # Claimed by a sealer (this writer was stalled past the lease): the rows of the last upload are sealed
        # there; the rows since go into a new window.
        self.taken_over += 1
        rest = window.lines[window.uploaded :]
        del self._open_windows[version]
        if rest:
            moved = self._open(version)
            moved.lines = rest
            self._upload(version, moved)

    def _open(self, version: str) -> _OpenObjectWindow:
        name, self._started[version] = window_name(
            version, self.host, self.pid, self.writer_id, self._started.get(version)
        )
        window = _OpenObjectWindow(name)
        self._open_windows[version] = window
        return window


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
