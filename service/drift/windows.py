"""Rolling window files of captured rows: N rows per file, the last K files kept, one writer per process.

    drift/windows/20260101T120000.123456Z-hreplica_a-p4242-r9f3c01aa-v0003.jsonl.part
                     being filled by process 4242 on host replica-a (writer id 9f3c01aa, model v0003)
    drift/windows/20260101T115512.000001Z-hreplica_a-p4242-r9f3c01aa-v0003.jsonl
                     sealed: full, or cut short by a shutdown
    (names without -h/-r, from earlier versions, are still read)

One JSON line per captured text: time, model_version, dim, the descriptors, the embedding as base64 float32
(exact, and 3x smaller than a JSON list), and the text as EMBEDGATE_DRIFT_TEXTS says: kept (so a drifted
window's novel queries can be read and labelled), hashed, or dropped. The signals need only descriptors and
vectors; captured traffic may hold personal data, so texts are also bounded by EMBEDGATE_DRIFT_RETENTION_DAYS. Each writer writes its own files (host, pid and a random id are in the name: two
containers on two hosts are often both pid 1), so several BentoML workers or replicas sharing one folder never
interleave lines. Names start with the UTC start time, so sorting them sorts windows in time. A window is sealed
by an atomic rename, so readers only ever see complete files. A window never mixes model versions, since each
version is compared to its own reference: a writer keeps one open window per version, each filling on its own, so
pinned clients on one version and default clients on another (docs/versions.md) both fill whole windows.

Who seals an open window besides its writer: on the same host, the next writer or judge, once its pid is gone; on
another host (whose pids mean nothing here), any writer or judge, once the window has not been updated for the
lease (`DriftSettings.lease_s`, 6 flush intervals): a live writer touches its open window every flush interval
(`tick`), so only a dead or stalled one goes that long. A stalled writer that wakes up finds its window gone and
opens a new one. On object storage the same rules hold with compare-and-swap (service/drift/object_windows.py).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import os
import re
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.drift.settings import LEASE_FLUSHES

SEALED_SUFFIX = ".jsonl"
PART_SUFFIX = ".jsonl.part"
WINDOW_NAME = re.compile(
    r"^(?P<started>\d{8}T\d{6}\.\d{6}Z)(?:-h(?P<host>[A-Za-z0-9_.]+))?-p(?P<pid>\d+)"
    r"(?:-r(?P<writer>[0-9a-f]+))?-(?P<version>[A-Za-z0-9_.:-]+)$"
)


@dataclass(frozen=True)
class CapturedRow:
    """One captured text, ready to write: its descriptors and its embedding at the served dim."""

    time: float
    model_version: str
    dim: int
    descriptors: dict[str, float]
    embedding: np.ndarray  # float32 [dim], unit length as served
    text: str | None = None  # the text, its "sha256:<hex>", or None (EMBEDGATE_DRIFT_TEXTS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "model_version": self.model_version,
            "dim": self.dim,
            **self.descriptors,
            "embedding_b64": base64.b64encode(np.asarray(self.embedding, "<f4").tobytes()).decode("ascii"),
            **({"text": self.text} if self.text is not None else {}),
        }


@dataclass(frozen=True)
class WindowInfo:
    """A sealed window file, described by its name."""

    window_id: str
    path: Path
    model_version: str
    started_at: str  # UTC, ISO 8601
    pid: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "window_id": self.window_id,
            "path": str(self.path),
            "model_version": self.model_version,
            "started_at": self.started_at,
            "pid": self.pid,
        }


@dataclass(frozen=True)
class WindowData:
    """The rows of one window: descriptor columns, served dims, and vectors (rows may differ in dim)."""

    info: WindowInfo
    times: np.ndarray  # float64 [rows], unix seconds
    dims: np.ndarray  # int64 [rows]
    descriptors: dict[str, np.ndarray] = field(repr=False)  # name -> float64 [rows]
    vectors: tuple[np.ndarray, ...] = field(repr=False)
    bad_lines: int = 0
    texts: tuple[str | None, ...] = field(default=(), repr=False)  # per row; None where not kept

    @property
    def rows(self) -> int:
        return len(self.dims)

    def embeddings_at(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows served at `dim` or more, cut to `dim` and re-normalised (exactly what serving `dim` returns, since
        a smaller Matryoshka dim is the prefix of a larger one, normalised), and the mask of rows used."""
        mask = self.dims >= dim
        if not mask.any():
            return np.zeros((0, dim), dtype=np.float32), mask
        from service.model.embedder import truncate_dims

        rows = np.stack([vector[:dim] for vector, keep in zip(self.vectors, mask, strict=True) if keep])
        return truncate_dims(rows, dim), mask

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.info.to_dict(),
            "rows": self.rows,
            "bad_lines": self.bad_lines,
            "dims": sorted({int(d) for d in self.dims}),
        }


@dataclass
class _OpenWindow:
    """One version's open window: its `.part` file, the handle appending to it, and its rows so far."""

    part: Path
    handle: Any
    rows: int = 0


class WindowWriter:
    """Appends captured rows to this process's open window of their model version; seals a window at
    `window_rows`, keeps `keep_windows`.

    One open window per version, each filling on its own: with pinned and default clients on different versions,
    every version still gets full windows (sealing at each change of version left windows of a few rows that
    could not be judged). Not thread-safe: the capture's single writer thread owns it."""

    def __init__(
        self,
        windows_dir: Path,
        window_rows: int,
        keep_windows: int,
        pid: int | None = None,
        host: str | None = None,
        flush_interval_s: float | None = None,
    ) -> None:
        """`flush_interval_s`: how often `tick` touches the open windows (their heartbeat), and so the lease
        (LEASE_FLUSHES intervals) after which this writer seals another host's open window; None: no heartbeat,
        and other hosts' windows are never sealed."""
        for name, value, low in (("window_rows", window_rows, 1), ("keep_windows", keep_windows, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
        self.windows_dir = Path(windows_dir)
        self.window_rows = window_rows
        self.keep_windows = keep_windows
        self.pid = os.getpid() if pid is None else pid
        self.host = host_label(host)
        # tells apart two writers with the same host and pid (containers)
        self.writer_id = secrets.token_hex(4)
        self.windows_dir.mkdir(parents=True, exist_ok=True)
        self.sealed_count = 0
        self.deleted_count = 0
        self._open_windows: dict[str, _OpenWindow] = {}
        self._started: dict[str, str] = {}  # each version's last window start (a new one must not reuse it)
        self.flush_interval_s = flush_interval_s
        self._touched = 0.0
        seal_orphaned_parts(self.windows_dir, own_pid=self.pid, host=self.host, lease_s=self.lease_s)

    @property
    def lease_s(self) -> float | None:
        return None if self.flush_interval_s is None else LEASE_FLUSHES * self.flush_interval_s

    def tick(self) -> None:
        """The heartbeat (called by the capture's writer thread at least every flush interval): touch every open
        window, so other hosts see it is alive even when no traffic comes."""
        if not self._open_windows or self.flush_interval_s is None:
            return
        now = time.time()
        if now - self._touched < self.flush_interval_s:
            return
        self._forget_taken_over()
        for window in self._open_windows.values():
            with contextlib.suppress(FileNotFoundError):  # sealed by another host this instant: next tick
                os.utime(window.part)
        self._touched = now

    @property
    def current_rows(self) -> int:
        """Rows in the open windows, every version together."""
        return sum(window.rows for window in self._open_windows.values())

    def open_rows(self) -> dict[str, int]:
        """Rows in each version's open window."""
        return {version: window.rows for version, window in self._open_windows.items()}

    def append(self, rows: Sequence[CapturedRow]) -> None:
        self._forget_taken_over()
        written: dict[str, _OpenWindow] = {}
        for row in rows:
            window = self._open_windows.get(row.model_version) or self._open(row.model_version)
            window.handle.write(json.dumps(row.to_dict(), separators=(",", ":")) + "\n")
            window.rows += 1
            written[row.model_version] = window
            if window.rows >= self.window_rows:
                self.seal(row.model_version)
        for version, window in written.items():
            if self._open_windows.get(version) is window:
                window.handle.flush()  # a crash loses at most the rows still in the capture queue
        if written:
            self._touched = time.time()

    def _forget_taken_over(self) -> None:
        """Forget open windows another host sealed after the lease (this writer was stalled): their rows are in
        the sealed files; the next row of that version opens a new window."""
        for version, window in list(self._open_windows.items()):
            if not window.part.exists():
                window.handle.close()
                del self._open_windows[version]

    def seal(self, version: str | None = None) -> list[Path]:
        """Close the open window of `version` (None: of every version) if it has rows, and make it visible to
        readers; returns the sealed paths."""
        versions = list(self._open_windows) if version is None else [version]
        sealed = []
        for name in versions:
            window = self._open_windows.pop(name, None)
            if window is not None and (final := self._seal(window)) is not None:
                sealed.append(final)
        return sealed

    def _seal(self, window: _OpenWindow) -> Path | None:
        window.handle.flush()
        os.fsync(window.handle.fileno())
        window.handle.close()
        part = window.part
        try:
            if part.stat().st_size == 0:
                part.unlink()
                return None
        except FileNotFoundError:  # another host sealed it after the lease: its rows are in that window
            return None
        final = part.with_name(part.name[: -len(PART_SUFFIX)] + SEALED_SUFFIX)
        try:
            os.replace(part, final)
        except FileNotFoundError:
            return None
        self.sealed_count += 1
        self.deleted_count += rotate(self.windows_dir, self.keep_windows)
        return final

    def close(self) -> None:
        self.seal()

    def _open(self, version: str) -> _OpenWindow:
        name, self._started[version] = window_name(
            version, self.host, self.pid, self.writer_id, self._started.get(version)
        )
        part = self.windows_dir / f"{name}{PART_SUFFIX}"
        window = _OpenWindow(part, open(part, "a", encoding="utf-8"))
        self._open_windows[version] = window
        return window


def window_name(
    version: str, host: str, pid: int, writer_id: str, not_started: str | None = None
) -> tuple[str, str]:
    """A new window's name (without suffix) and its start stamp: `<UTC start>-h<host>-p<pid>-r<writer>-<version>`,
    the one naming rule of folder and object-store windows. `not_started`: a stamp the new one must differ from (a
    window re-opened in the same microsecond must not reuse a sealed name)."""
    if not re.fullmatch(r"[A-Za-z0-9_.:-]+", version):
        raise ValueError(
            f"model_version {version!r} cannot be part of a file name; expected letters, digits "
            f"and . _ : - (e.g. v0003)"
        )
    started = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    while started == not_started:
        started = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{started}-h{host}-p{pid}-r{writer_id}-{version}", started


def list_windows(windows_dir: Path) -> list[WindowInfo]:
    """Sealed windows, oldest first (files being written are not listed)."""
    windows_dir = Path(windows_dir)
    if not windows_dir.is_dir():
        return []
    found = []
    for path in windows_dir.glob(f"*{SEALED_SUFFIX}"):
        match = WINDOW_NAME.match(path.name[: -len(SEALED_SUFFIX)])
        if match:
            started = datetime.datetime.strptime(match["started"], "%Y%m%dT%H%M%S.%fZ")
            found.append(
                WindowInfo(
                    path.name[: -len(SEALED_SUFFIX)],
                    path,
                    match["version"],
                    started.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    int(match["pid"]),
                )
            )
    return sorted(found, key=lambda info: info.window_id)


def read_window(info: WindowInfo, descriptor_names: Sequence[str]) -> WindowData:
    """Load a sealed window. A line that does not parse (a torn write) is skipped and counted in `bad_lines`."""
    times, dims, vectors, texts, bad = [], [], [], [], 0
    columns: dict[str, list[float]] = {name: [] for name in descriptor_names}
    with open(info.path, encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
                vector = np.frombuffer(base64.b64decode(record["embedding_b64"]), dtype="<f4")
                values = [float(record[name]) for name in descriptor_names]
                when = float(record["time"])
                if len(vector) != int(record["dim"]) or record["model_version"] != info.model_version:
                    raise ValueError("row does not match its window")
            except (ValueError, KeyError, TypeError):
                bad += 1
                continue
            times.append(when)
            text = record.get("text")
            texts.append(text if isinstance(text, str) else None)
            dims.append(len(vector))
            vectors.append(vector)
            for name, value in zip(descriptor_names, values, strict=True):
                columns[name].append(value)
    return WindowData(
        info,
        np.asarray(times, dtype=np.float64),
        np.asarray(dims, dtype=np.int64),
        {name: np.asarray(values, dtype=np.float64) for name, values in columns.items()},
        tuple(vectors),
        bad,
        tuple(texts),
    )


def rotate(windows_dir: Path, keep_windows: int) -> int:
    """Delete the oldest sealed windows beyond `keep_windows`; returns how many were deleted."""
    windows = list_windows(windows_dir)
    stale = windows[: max(len(windows) - keep_windows, 0)]
    for info in stale:
        with contextlib.suppress(FileNotFoundError):  # another process's writer rotated it first
            info.path.unlink()
    return len(stale)


def seal_orphaned_parts(
    windows_dir: Path,
    own_pid: int,
    host: str | None = None,
    lease_s: float | None = None,
    now: float | None = None,
) -> list[Path]:
    """Seal `.part` files left by dead writers, so their rows are not lost: on this host, those whose process is
    gone (a crash or a kill); on another host (its pids mean nothing here), those not updated for `lease_s`
    seconds (None: never; an unnamed host is an older name of this one). A live writer is never touched."""
    sealed = []
    here = host_label(host)
    for part in Path(windows_dir).glob(f"*{PART_SUFFIX}"):
        match = WINDOW_NAME.match(part.name[: -len(PART_SUFFIX)])
        if not match:
            continue
        if (match["host"] or here) != here:
            if lease_s is None or not _stale(part, lease_s, now):
                continue
        elif int(match["pid"]) == own_pid or _pid_alive(int(match["pid"])):
            continue
        try:
            empty = part.stat().st_size == 0
        except FileNotFoundError:  # its writer or another judge sealed it meanwhile
            continue
        if empty:
            part.unlink(missing_ok=True)
            continue
        final = part.with_name(part.name[: -len(PART_SUFFIX)] + SEALED_SUFFIX)
        with contextlib.suppress(FileNotFoundError):  # another worker sealed it at the same moment
            os.replace(part, final)
            sealed.append(final)
    return sealed


def _stale(part: Path, lease_s: float, now: float | None) -> bool:
    try:
        return (time.time() if now is None else now) - part.stat().st_mtime >= lease_s
    except FileNotFoundError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def host_label(host: str | None = None) -> str:
    """This host's name (or `host`) as it appears in window names: letters, digits, `_` and `.` only."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", host or socket.gethostname() or "host")[:63] or "host"
