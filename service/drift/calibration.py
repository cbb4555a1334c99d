"""Thresholds that same-distribution traffic does not cross: calibrated on reference-vs-reference splits.

    calibration = calibrate(queries, query_descriptors, corpus, window_rows=500)
    calibration.signal("embedding").threshold       # e.g. 0.68 (classifier ROC AUC)

Each split draws a pseudo-window of `current_rows = min(window_rows, reference_rows // 2)` reference queries and
compares it with the other reference queries, by the same signal functions that judge real windows. The spread
of these scores is what "no drift" looks like at this window size; a threshold sits above all of it:

    threshold = max(null_mean + k * null_std, null_max, floor)

Why not Evidently's own thresholds: its classifier method with `bootstrap` is a p < 0.05 test per window (one
window in 20 false-alarms by design), and its fixed 0.55 is too low for small windows (measured on the legal set:
same-distribution AUC up to 0.65 at 50 rows). Why the floors: held-out queries of the *same* domain are not the
reference queries; measured on the legal set, their nearest-document cosine sat 0.016 below the reference's
(0.046 at most on 50-row windows) while another domain dropped it by 0.28, so a drop under 0.05 is not a
domain change. Descriptor drift is calibrated and reported but not in the alarm by default: K-S tests on windows
with repeated queries flagged 2 of 7 descriptors on same-distribution traffic.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from service.drift.errors import DriftInputError
from service.drift.reference import Calibration, SignalThreshold
from service.drift.signals import SIGNALS, embedding_drift_score, nearest_doc_cosine, retrieval_drop

DEFAULT_SPLITS = 40
DEFAULT_K = 4.0
# Lowest threshold per signal, whatever the null spread (see the module docstring for where they come from).
FLOORS = {"embedding": 0.55, "retrieval": 0.05, "descriptors": 0.5}
DEFAULT_ALARM_SIGNALS = ("embedding", "retrieval")
MIN_REFERENCE_QUERIES = 20


def calibrate(queries: np.ndarray, query_descriptors: dict[str, Sequence[float]], corpus: np.ndarray,
              window_rows: int, splits: int = DEFAULT_SPLITS, k: float = DEFAULT_K, seed: int = 0,
              alarm_signals: Sequence[str] = DEFAULT_ALARM_SIGNALS) -> Calibration:
    """Null distributions and thresholds for each signal, for windows of `window_rows` rows."""
    from service.drift.compute import descriptor_drift_share

    started = time.perf_counter()
    queries = np.asarray(queries, dtype=np.float32)
    _check(queries, window_rows, splits, k, alarm_signals)
    reference_rows = len(queries)
    current_rows = min(window_rows, reference_rows // 2)
    nearest = nearest_doc_cosine(queries, corpus)
    descriptors = {name: np.asarray(values, dtype=np.float64) for name, values in query_descriptors.items()}
    rng = np.random.default_rng(seed)
    scores: dict[str, list[float]] = {name: [] for name in SIGNALS}
    for _ in range(splits):
        order = rng.permutation(reference_rows)
        window, rest = order[:current_rows], order[current_rows:]
        scores["embedding"].append(embedding_drift_score(queries[window], queries[rest]))
        scores["retrieval"].append(retrieval_drop(nearest[window], nearest[rest]))
        scores["descriptors"].append(descriptor_drift_share(
            {name: values[window] for name, values in descriptors.items()},
            {name: values[rest] for name, values in descriptors.items()}))
    thresholds = tuple(_threshold(name, np.asarray(scores[name]), k, name in alarm_signals) for name in SIGNALS)
    return Calibration(window_rows=window_rows, current_rows=current_rows, reference_rows=reference_rows,
                       splits=splits, k=k, seed=seed, seconds=round(time.perf_counter() - started, 2),
                       signals=thresholds)


def _threshold(name: str, null: np.ndarray, k: float, in_alarm: bool) -> SignalThreshold:
    mean, std, top = float(null.mean()), float(null.std()), float(null.max())
    return SignalThreshold(name=name, threshold=round(max(mean + k * std, top, FLOORS[name]), 4), null_mean=mean,
                           null_std=std, null_max=top, floor=FLOORS[name], in_alarm=in_alarm)


def _check(queries: np.ndarray, window_rows: int, splits: int, k: float, alarm_signals: Sequence[str]) -> None:
    if queries.ndim != 2 or len(queries) < MIN_REFERENCE_QUERIES:
        raise DriftInputError(f"calibration needs at least {MIN_REFERENCE_QUERIES} reference queries [rows, dim]; "
                              f"got shape {queries.shape}: pass more eval queries to build_reference")
    if isinstance(window_rows, bool) or not isinstance(window_rows, int) or window_rows < 10:
        raise DriftInputError(f"window_rows: expected an integer >= 10 (EMBEDGATE_DRIFT_WINDOW_ROWS), got "
                              f"{window_rows!r}")
    if isinstance(splits, bool) or not isinstance(splits, int) or splits < 5:
        raise DriftInputError(f"splits: expected an integer >= 5 (the null distribution needs a spread), got "
                              f"{splits!r}")
    if not isinstance(k, (int, float)) or isinstance(k, bool) or k < 0:
        raise DriftInputError(f"k: expected a number >= 0 (standard deviations above the null mean), got {k!r}")
    unknown = [name for name in alarm_signals if name not in SIGNALS]
    if unknown or not alarm_signals:
        raise DriftInputError(f"alarm_signals: expected a non-empty subset of {list(SIGNALS)}, got "
                              f"{list(alarm_signals)}")
