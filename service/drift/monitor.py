"""The service's drift worker: every EMBEDGATE_DRIFT_INTERVAL_S, judge the full windows, publish the gauges, and
log a JSON warning while the served version has drifted for EMBEDGATE_DRIFT_ALERT_WINDOWS windows in a row.

    monitor = DriftMonitor.from_env(registry_root=Path("registry"))   # None when capture is off
    monitor.start()          # a daemon thread; never touches the request path
    ...
    monitor.stop()

The first pass imports Evidently (7-15 s here) and each window takes about 1 s; both happen on this thread. The
alert log line is one JSON object (event "embedgate.drift.alert"), so log shippers can route it as is.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from service.drift.runner import DriftRunResult, ReferenceCache, run_drift
from service.drift.settings import DriftSettings

logger = logging.getLogger("embedgate.drift")
ALERT_EVENT = "embedgate.drift.alert"
WINDOW_EVENT = "embedgate.drift.window"


class DriftMonitor:
    """Runs `run_drift` periodically on a background thread; `run_once` does one pass (tests, `embedgate drift`)."""

    def __init__(self, settings: DriftSettings, registry_root: Path, gauges: Any = None) -> None:
        self.settings = settings
        # an object-store URL stays text (Path would fold s3://b into s3:/b)
        self.registry_root = registry_root if "://" in str(registry_root) else Path(registry_root)
        self._references = ReferenceCache(self.registry_root)
        self._gauges = gauges
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reported_failures: set[str] = set()
        self.last_result: DriftRunResult | None = None

    @classmethod
    def from_env(cls, registry_root: Path, environ: Mapping[str, str] | None = None) -> DriftMonitor | None:
        """A monitor configured by `EMBEDGATE_DRIFT_*`, or None when capture is off (nothing to judge)."""
        settings = DriftSettings.from_env(environ)
        return cls(settings, registry_root) if settings.sample_rate > 0 else None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="embedgate-drift-monitor", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop after the current pass (a window being judged finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def run_once(self) -> DriftRunResult:
        """Judge pending windows, update the gauges, log each window and any alert; returns the pass result."""
        result = run_drift(self.settings, self.registry_root, references=self._references, wait=False)
        self.last_result = result
        gauges = self._gauges_or_default()
        latest = {}
        for window in result.computed:
            logger.info(
                json.dumps(
                    {
                        "event": WINDOW_EVENT,
                        "window_id": window.window_id,
                        "model_version": window.model_version,
                        "rows": window.rows,
                        "drifted": window.drifted,
                        "skipped_reason": window.skipped_reason,
                        "scores": {s.name: s.score for s in window.signals},
                    }
                )
            )
            if not window.skipped:
                latest[window.model_version] = window
        # One gauge update and at most one alert line per version and pass, from its newest judged window.
        for version, window in latest.items():
            state = result.alert_for(version)
            consecutive, alerting = (state.consecutive, state.alerting) if state else (0, False)
            gauges.publish(window, consecutive, alerting)
            if alerting and window.drifted:
                logger.warning(json.dumps(alert_record(window, consecutive, self.settings.alert_windows)))
        if result.served_version:
            gauges.forget_versions_except({result.served_version})
        for failure in result.failed:
            if failure.window_id not in self._reported_failures:  # retried every pass: say it once
                self._reported_failures.add(failure.window_id)
                logger.error(json.dumps({"event": "embedgate.drift.error", **failure.to_dict()}))
        return result

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # the worker must outlive any one bad pass
                logger.exception("drift monitor pass failed; retrying in %.0f s", self.settings.interval_s)
            self._stop.wait(self.settings.interval_s)

    def _gauges_or_default(self) -> Any:
        if self._gauges is None:
            from service.drift.gauges import drift_gauges

            self._gauges = drift_gauges()
        return self._gauges


def alert_record(window: Any, consecutive: int, alert_windows: int) -> dict[str, Any]:
    """The structured alert: which version, how long, which signals, and what to do."""
    return {
        "event": ALERT_EVENT,
        "level": "warning",
        "model_version": window.model_version,
        "consecutive_drifted_windows": consecutive,
        "alert_windows": alert_windows,
        "window_id": window.window_id,
        "signals": {
            s.name: {"score": s.score, "threshold": s.threshold, "drifted": s.drifted, "in_alarm": s.in_alarm}
            for s in window.signals
        },
        "action": "served traffic no longer looks like the reference: review the drift dashboard and re-train "
        "(`embedgate drift` exits 1 while this holds)",
    }
