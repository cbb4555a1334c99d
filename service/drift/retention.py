"""The retention period of captured traffic (EMBEDGATE_DRIFT_RETENTION_DAYS): windows (which may hold texts),
their verdicts (which list the novel queries) and their Evidently snapshots (which show them) are deleted once
older than it. Run by the judge at the start of every pass, so nothing older is judged or shown again.

    expired = expire(settings)      # Expired(windows=3, summaries=3, snapshots=3)

Age: a window's and a verdict's from the window's start (its name), a snapshot's from when it was written (its
id is a UUIDv7, which carries its creation time).
"""

from __future__ import annotations

import datetime
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from service.drift.windows import list_windows

DAY_S = 86400.0


@dataclass(frozen=True)
class Expired:
    windows: int
    summaries: int
    snapshots: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def expire(settings: Any, now: float | None = None) -> Expired:
    """Delete what is older than `settings.retention_days` (0: nothing) in the drift folder (its local copy)."""
    if not settings.retention_days:
        return Expired(0, 0, 0)
    oldest = (time.time() if now is None else now) - settings.retention_days * DAY_S
    windows = 0
    for info in list_windows(settings.windows_dir):
        if _stamp(info.window_id) < oldest:
            info.path.unlink(missing_ok=True)
            windows += 1
    summaries = 0
    if Path(settings.summaries_dir).is_dir():
        for path in Path(settings.summaries_dir).glob("*.json"):
            if _stamp(path.stem) < oldest:
                path.unlink(missing_ok=True)
                summaries += 1
    snapshots = 0
    if Path(settings.workspace_dir).is_dir():
        from service.drift.workspace import DriftWorkspace

        snapshots = DriftWorkspace(settings.workspace_dir).delete_before(oldest)
    return Expired(windows, summaries, snapshots)


def _stamp(window_id: str) -> float:
    """A window's start (unix seconds) from its id; an id without one is never expired by age."""
    try:
        started = datetime.datetime.strptime(window_id[:23], "%Y%m%dT%H%M%S.%fZ")
    except ValueError:
        return float("inf")
    return started.replace(tzinfo=datetime.UTC).timestamp()


def snapshot_time(snapshot_id: Any) -> float:
    """When a snapshot was written: the millisecond clock of its UUIDv7 id (Evidently's new_id)."""
    parsed = uuid.UUID(str(snapshot_id))
    if parsed.version != 7:
        return float("inf")  # not time-ordered: never expired by age
    return int(parsed.hex[:12], 16) / 1000.0
