"""Prometheus series for drift, in prometheus_client's default registry (what the service's /metrics serves).

    embedgate_drift_score{model_version,signal}          last window's score per signal (embedding, retrieval,
                                                         novelty, descriptors); alarm when score > threshold
    embedgate_drift_threshold{model_version,signal}      the calibrated threshold for that score
    embedgate_drift_detected{model_version}              1 when the last window drifted, else 0
    embedgate_drift_consecutive_windows{model_version}   drifted windows in a row (alert at EMBEDGATE_DRIFT_ALERT_WINDOWS)
    embedgate_drift_alert{model_version}                 1 while the alert holds
    embedgate_drift_window_rows{model_version}           rows in the last computed window
    embedgate_drift_last_computed_timestamp_seconds{model_version}
    embedgate_drift_capture_{offered,sampled,written,dropped,errors}_total   capture counters (texts)

Created on first use, not at import, and once per registry, so importing this module has no side effects. With
several BentoML workers (prometheus multiprocess mode) each gauge shows the most recently set value: the worker
whose monitor judged the last window.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

_LOCK = threading.Lock()
_CACHE: dict[tuple[int, str], Any] = {}
CAPTURE_COUNTS = {
    "offered": "texts offered to the drift capture (served texts)",
    "sampled": "texts sampled and queued for a drift window",
    "written": "captured texts written to a drift window file",
    "dropped": "sampled texts dropped because the capture queue was full",
    "errors": "drift capture errors (never raised to requests)",
}


@dataclass(frozen=True)
class DriftGauges:
    """The drift gauges of one registry; `publish` sets them from a window result and the alert state."""

    score: Any
    threshold: Any
    detected: Any
    consecutive: Any
    alert: Any
    window_rows: Any
    last_computed: Any

    def publish(self, result: Any, consecutive: int, alerting: bool) -> None:
        """Set every gauge from a `WindowDriftResult` (duck-typed: this module imports no drift code)."""
        version = result.model_version
        for signal in result.signals:
            if signal.score is not None:
                self.score.labels(version, signal.name).set(signal.score)
            self.threshold.labels(version, signal.name).set(signal.threshold)
        self.detected.labels(version).set(1.0 if result.drifted else 0.0)
        self.consecutive.labels(version).set(consecutive)
        self.alert.labels(version).set(1.0 if alerting else 0.0)
        self.window_rows.labels(version).set(result.rows)
        self.last_computed.labels(version).set(result.computed_at_unix)

    def forget_versions_except(self, keep: set[str]) -> None:
        """Drop the series of versions no longer served (after a swap), so dashboards do not show stale values."""
        for gauge in (
            self.score,
            self.threshold,
            self.detected,
            self.consecutive,
            self.alert,
            self.window_rows,
            self.last_computed,
        ):
            # Sample labels come in the gauge's label-name order, which is what remove() takes.
            label_sets = {
                tuple(sample.labels.values()) for family in gauge.collect() for sample in family.samples
            }
            for labels in label_sets:
                if labels[0] not in keep:
                    gauge.remove(*labels)


def drift_gauges(registry: Any = None) -> DriftGauges:
    """The drift gauges in `registry` (default: prometheus_client's default registry), created once."""
    from prometheus_client import REGISTRY, Gauge

    registry = REGISTRY if registry is None else registry
    with _LOCK:
        key = (id(registry), "gauges")
        if key not in _CACHE:

            def gauge(name: str, doc: str, labels: tuple[str, ...] = ("model_version",)) -> Any:
                # Under BentoML's multiprocess metrics, the worker whose monitor judged last has the value.
                return Gauge(
                    f"embedgate_drift_{name}", doc, labels, registry=registry, multiprocess_mode="mostrecent"
                )

            _CACHE[key] = DriftGauges(
                score=gauge(
                    "score",
                    "drift score of the last computed window, per signal",
                    ("model_version", "signal"),
                ),
                threshold=gauge(
                    "threshold",
                    "calibrated alarm threshold per signal (score > threshold drifts)",
                    ("model_version", "signal"),
                ),
                detected=gauge("detected", "1 if the last computed window drifted, else 0"),
                consecutive=gauge(
                    "consecutive_windows", "drifted windows in a row, up to the last computed one"
                ),
                alert=gauge("alert", "1 while EMBEDGATE_DRIFT_ALERT_WINDOWS drifted windows in a row hold"),
                window_rows=gauge("window_rows", "rows in the last computed window"),
                last_computed=gauge(
                    "last_computed_timestamp_seconds", "unix time of the last drift computation"
                ),
            )
        return _CACHE[key]


def capture_counters(registry: Any = None) -> dict[str, Any]:
    """{count name: Counter} for the capture's counts, created once per registry."""
    from prometheus_client import REGISTRY, Counter

    registry = REGISTRY if registry is None else registry
    with _LOCK:
        key = (id(registry), "capture")
        if key not in _CACHE:
            _CACHE[key] = {
                name: Counter(f"embedgate_drift_capture_{name}", doc, registry=registry)
                for name, doc in CAPTURE_COUNTS.items()
            }
        return _CACHE[key]
