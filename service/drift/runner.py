"""Judge the captured windows that have no verdict yet: one JSON summary and one Evidently snapshot per window,
and the alert streak per model version. Used by the service's monitor and by `embedgate drift`.

    result = run_drift(DriftSettings.from_env(), Path("registry"))
    result.alerting                  # some version drifted in its last EMBEDGATE_DRIFT_ALERT_WINDOWS windows

    drift/summaries/<window_id>.json   WindowDriftResult.to_dict(), written atomically

With an object-store drift folder (EMBEDGATE_DRIFT_DIR=s3://...) a pass takes the store's run lease, seals stale
open windows of dead replicas, judges in a local copy, and pushes the verdicts back (service/drift/object_mirror.py).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from service.drift.compute import WindowDriftResult, compute_window
from service.drift.descriptors import DESCRIPTOR_NAMES
from service.drift.errors import DriftError, DriftInputError, DriftReferenceError
from service.drift.reference import REFERENCE_DIR, DriftReference, load_reference
from service.drift.settings import DriftSettings
from service.drift.windows import WindowInfo, list_windows, read_window, seal_orphaned_parts
from service.errors import RegistryError
from service.storage.atomic_files import write_json_atomic

RUN_LOCK = ".run.lock"


@dataclass(frozen=True)
class AlertState:
    """The streak of drifted windows at the end of a version's history (skipped windows neither add nor break)."""

    model_version: str
    consecutive: int
    alert_windows: int
    alerting: bool
    last_window_id: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class WindowFailure:
    window_id: str
    error: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DriftRunResult:
    """What one pass did: windows judged now, windows that failed (retried next pass), and the alert states.

    `alerting` is about the served version only (the registry's champion, else the newest window's version):
    a retired version's old streak must not keep asking for re-training."""

    computed: tuple[WindowDriftResult, ...]
    failed: tuple[WindowFailure, ...]
    alerts: tuple[AlertState, ...]
    served_version: str | None

    @property
    def alerting(self) -> bool:
        state = self.alert_for(self.served_version) if self.served_version else None
        return bool(state and state.alerting)

    def alert_for(self, model_version: str) -> AlertState | None:
        return next((state for state in self.alerts if state.model_version == model_version), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "alerting": self.alerting,
            "served_version": self.served_version,
            "computed": [r.to_dict() for r in self.computed],
            "failed": [f.to_dict() for f in self.failed],
            "alerts": [a.to_dict() for a in self.alerts],
        }


class ReferenceCache:
    """Loads each version's reference once, after checking its files against the version's manifest."""

    def __init__(self, registry_root: Path) -> None:
        self.registry_root = (
            registry_root if "://" in str(registry_root) else Path(registry_root)
        )  # s3://: kept
        self._loaded: dict[str, DriftReference | DriftReferenceError] = {}

    def get(self, model_version: str) -> DriftReference:
        if model_version not in self._loaded:
            try:
                self._loaded[model_version] = self._load(model_version)
            except DriftReferenceError as err:
                self._loaded[model_version] = err  # versions are immutable: the answer will not change
        found = self._loaded[model_version]
        if isinstance(found, DriftReferenceError):
            raise found
        return found

    def _load(self, model_version: str) -> DriftReference:
        from service.registry.object_registry import fetched_dir
        from service.registry.registry import Registry
        from service.storage.atomic_files import sha256_of

        try:  # on object storage, only the reference is fetched (not the version's graphs)
            version_dir = fetched_dir(Registry(self.registry_root), model_version, (f"{REFERENCE_DIR}/",))
        except RegistryError as err:
            raise DriftReferenceError(f"no drift reference for {model_version}: {err}") from None
        ref_dir = version_dir / REFERENCE_DIR
        if not ref_dir.is_dir():
            raise DriftReferenceError(
                f"{model_version} has no drift reference ({ref_dir} is missing): it was "
                f"promoted without one; promote a version built with build_reference"
            )
        manifest_path = version_dir / "manifest.json"
        if manifest_path.is_file():  # the reference is only as trustworthy as the registry's manifest says
            listed = json.loads(manifest_path.read_text(encoding="utf-8")).get("files", {})
            for rel, meta in listed.items():
                if rel.startswith(f"{REFERENCE_DIR}/") and sha256_of(version_dir / rel) != meta["sha256"]:
                    raise DriftReferenceError(
                        f"{version_dir / rel}: sha256 does not match the version's manifest "
                        f"(changed after promotion); refusing to judge drift with it"
                    )
        return load_reference(ref_dir)


def run_drift(
    settings: DriftSettings,
    registry_root: Path,
    *,
    window_ids: Sequence[str] | None = None,
    recompute: bool = False,
    write_snapshots: bool = True,
    references: ReferenceCache | None = None,
    wait: bool = True,
) -> DriftRunResult:
    """Judge pending windows (no summary yet), or `window_ids`, or every kept window with `recompute`.

    One pass at a time per drift folder (a file lock): several service workers, each with a monitor, and a
    scheduled `embedgate drift` never judge a window twice. With `wait=False` a busy folder skips this pass.
    Open windows of dead writers are sealed first (a dead replica's rows are judged without waiting for a
    writer of its host to start), never a live one (docs/drift.md, "Several replicas")."""
    if settings.on_object_store:
        return _run_on_object_store(
            settings, registry_root, window_ids, recompute, write_snapshots, references, wait
        )
    settings.dir.mkdir(parents=True, exist_ok=True)
    with open(settings.dir / RUN_LOCK, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            return DriftRunResult(
                (),
                (),
                alert_states(settings.summaries_dir, settings.alert_windows),
                served_version(registry_root, list_windows(settings.windows_dir)),
            )
        try:
            seal_orphaned_parts(settings.windows_dir, own_pid=os.getpid(), lease_s=settings.lease_s)
            return _run_locked(
                settings,
                registry_root,
                window_ids,
                recompute,
                write_snapshots,
                references or ReferenceCache(registry_root),
            )
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run_on_object_store(
    settings: DriftSettings,
    registry_root: Path,
    window_ids: Sequence[str] | None,
    recompute: bool,
    write_snapshots: bool,
    references: ReferenceCache | None,
    wait: bool,
) -> DriftRunResult:
    from service.drift.object_mirror import judging

    local = settings.model_copy(update={"dir": settings.local_dir})
    with judging(settings, wait=wait, snapshots=write_snapshots) as mirror:
        if mirror is None:  # another judge holds the store's run lease
            return DriftRunResult(
                (),
                (),
                alert_states(local.summaries_dir, settings.alert_windows),
                served_version(registry_root, list_windows(local.windows_dir)),
            )
        return run_drift(
            local,
            registry_root,
            window_ids=window_ids,
            recompute=recompute,
            write_snapshots=write_snapshots,
            references=references,
            wait=True,
        )


def _run_locked(
    settings: DriftSettings,
    registry_root: Path,
    window_ids: Sequence[str] | None,
    recompute: bool,
    write_snapshots: bool,
    references: ReferenceCache,
) -> DriftRunResult:
    from service.drift.retention import expire

    expire(settings)  # past the retention period: never judged or shown again
    windows = list_windows(settings.windows_dir)
    chosen = _choose(windows, settings.summaries_dir, window_ids, recompute)
    workspace = None
    computed, failed = [], []
    for info in chosen:
        try:
            result, snapshot = _judge(info, references)
            if snapshot is not None and write_snapshots:
                if workspace is None:
                    from service.drift.workspace import DriftWorkspace

                    workspace = DriftWorkspace(settings.workspace_dir)
                snapshot_id = workspace.add_snapshot(
                    info.model_version, snapshot, result.drifted, settings.keep_snapshots
                )
                result = WindowDriftResult.from_dict({**result.to_dict(), "snapshot_id": snapshot_id})
            write_summary(settings.summaries_dir, result)
            computed.append(result)
        except (DriftError, OSError, ValueError) as err:
            failed.append(WindowFailure(info.window_id, f"{type(err).__name__}: {err}"))
    _prune_summaries(
        settings.summaries_dir,
        {w.window_id for w in list_windows(settings.windows_dir)},
        settings.keep_windows,
    )
    return DriftRunResult(
        tuple(computed),
        tuple(failed),
        alert_states(settings.summaries_dir, settings.alert_windows),
        served_version(registry_root, list_windows(settings.windows_dir)),
    )


def served_version(registry_root: Path, windows: Sequence[WindowInfo]) -> str | None:
    """The registry's champion; without a readable one, the version of the newest captured window."""
    from service.registry.registry import Registry

    try:
        champion = Registry(registry_root).champion()
    except RegistryError:
        champion = None
    if champion is not None:
        return champion.version
    return windows[-1].model_version if windows else None


def _judge(info: WindowInfo, references: ReferenceCache) -> tuple[WindowDriftResult, Any]:
    window = read_window(info, DESCRIPTOR_NAMES)
    try:
        reference = references.get(info.model_version)
    except DriftReferenceError as err:  # judged as "cannot judge": recorded, never an alarm
        from service.drift.compute import skipped_result

        return skipped_result(window, str(err)), None
    return compute_window(window, reference)


def _choose(
    windows: list[WindowInfo], summaries_dir: Path, window_ids: Sequence[str] | None, recompute: bool
) -> list[WindowInfo]:
    if window_ids:
        by_id = {w.window_id: w for w in windows}
        unknown = [w for w in window_ids if w not in by_id]
        if unknown:
            kept = ", ".join(w.window_id for w in windows[-5:]) or "none"
            raise DriftInputError(
                f"windows {unknown} are not on disk (kept windows end with: {kept}); pass an id "
                f"from `embedgate drift --list`, or --all"
            )
        return [by_id[w] for w in window_ids]
    if recompute:
        return windows
    return [w for w in windows if not (summaries_dir / f"{w.window_id}.json").is_file()]


def write_summary(summaries_dir: Path, result: WindowDriftResult) -> Path:
    summaries_dir.mkdir(parents=True, exist_ok=True)
    path = summaries_dir / f"{result.window_id}.json"
    write_json_atomic(path, result.to_dict())
    return path


def read_summaries(summaries_dir: Path) -> list[WindowDriftResult]:
    """Every readable summary, oldest window first."""
    if not Path(summaries_dir).is_dir():
        return []
    results = []
    for path in sorted(Path(summaries_dir).glob("*.json")):
        try:
            results.append(WindowDriftResult.from_dict(json.loads(path.read_text(encoding="utf-8"))))
        except (json.JSONDecodeError, TypeError, KeyError):
            continue  # a summary from another format version: it no longer counts towards an alert
    return sorted(results, key=lambda r: r.window_id)


def alert_states(summaries_dir: Path, alert_windows: int) -> tuple[AlertState, ...]:
    """Per version: drifted windows in a row at the end of its judged history."""
    by_version: dict[str, list[WindowDriftResult]] = {}
    for result in read_summaries(summaries_dir):
        by_version.setdefault(result.model_version, []).append(result)
    states = []
    for version, results in sorted(by_version.items()):
        judged = [r for r in results if not r.skipped]
        streak = 0
        for result in reversed(judged):
            if not result.drifted:
                break
            streak += 1
        states.append(
            AlertState(
                version,
                streak,
                alert_windows,
                streak >= alert_windows,
                judged[-1].window_id if judged else None,
            )
        )
    return tuple(states)


def _prune_summaries(summaries_dir: Path, kept_windows: set[str], keep: int) -> None:
    """Summaries follow their windows out, except the newest `keep`, so the alert streak survives rotation."""
    if not summaries_dir.is_dir():
        return
    paths = sorted(summaries_dir.glob("*.json"))
    for path in paths[: max(len(paths) - keep, 0)]:
        if path.stem not in kept_windows:
            path.unlink(missing_ok=True)
