"""Thresholds that *unseen* traffic of the reference's domain does not cross: calibrated on held-out queries.

    calibration = calibrate(queries, query_descriptors, corpus, window_rows=500, held_out=mask)
    calibration.signal("retrieval").threshold       # e.g. 0.05 (drop in mean nearest-document cosine)

The reference holds the domain's queries: those the model was fine-tuned on and, marked by `held_out`, those it
never saw (dev/test queries). Fine-tuning pulls its own training queries towards their documents (measured on the
legal demo's champion at 64d: nearest-document cosine 0.725 for trained queries, 0.594 for unseen ones of the same
domain, 0.485 for another domain), so a null distribution made of trained queries describes traffic that never
arrives. Each split therefore draws a pseudo-window of `current_rows = min(window_rows, held_out // 2)` *held-out*
queries and judges it against the rest of the reference by the same functions that judge real windows; the
spread of these scores is what new same-domain traffic looks like at this window size:

    threshold = max(null_mean + k * null_std, null_max, floor)

A signal needs MIN_HELD_OUT[signal] held-out queries to be calibrated this way. With fewer, it is calibrated on
reference-vs-reference splits (the only null there is), reported on every window, and kept out of the alarm: the
reference says why (`SignalThreshold.excluded`), and so does the promotion.

Why not Evidently's own thresholds: its classifier method with `bootstrap` is a p < 0.05 test per window (one
window in 20 false-alarms by design), and its fixed 0.55 is too low for small windows (same-distribution AUC up to
0.65 at 50 rows on the legal set). The floors are changes too small to matter whatever the null says (docs/drift.md
gives the measurements): embedding AUC 0.55 (Evidently's default), retrieval 0.05, novelty 0.05 (five times the
nominal 1% tail share), descriptors 0.5. Novelty's threshold is exact rather than resampled: its cutoff is the k-th lowest of
the held-out scores, so a window's novel-row count is Beta-Binomial (`signals.novelty_threshold`) for any window
size, where pseudo-windows could only be half the held-out queries (a null 2-3x too wide for 200-500-row windows). Descriptor drift is reported, not in the alarm by default: K-S tests on windows with
repeated queries flagged 2 of 7 descriptors on same-distribution traffic.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from service.drift.compute import descriptor_drift_share
from service.drift.descriptors import DESCRIPTOR_NAMES
from service.drift.errors import DriftInputError
from service.drift.reference import Calibration, ReferenceSpec, SignalThreshold
from service.drift.signals import (
    SIGNALS,
    embedding_drift_score,
    nearest_doc_cosine,
    novelty_cutoff,
    novelty_threshold,
    retrieval_drop,
    tail_share,
)
from service.drift.thresholds import FLOORS, MIN_HELD_OUT, NOVELTY_ALPHA, enough_held_out

DEFAULT_SPLITS = 40
DEFAULT_K = 4.0
DEFAULT_ALARM_SIGNALS = ("embedding", "retrieval", "novelty")
MIN_REFERENCE_QUERIES = 20


@dataclass(frozen=True)
class ReferenceStatistics:
    """What a window is compared with: the queries that stand for new traffic (`baseline`), their mean
    nearest-document cosine and the novelty cutoff. Held-out queries when there are enough, else all of them."""

    baseline: np.ndarray  # bool [queries]
    retrieval_mean: float
    novelty_cutoff: float


def reference_statistics(
    queries: np.ndarray, held_out: np.ndarray, corpus: np.ndarray
) -> ReferenceStatistics:
    """The retrieval baseline and novelty cutoff of a reference (what `build_reference` stores)."""
    queries, held_out = np.asarray(queries, dtype=np.float32), _mask(held_out, len(queries))
    baseline = held_out if enough_held_out(int(held_out.sum())) else np.ones(len(queries), dtype=bool)
    rows = np.flatnonzero(baseline)
    nearest = nearest_doc_cosine(queries[rows], corpus)
    return ReferenceStatistics(
        baseline, float(nearest.mean()), novelty_cutoff(_leave_one_out(queries[rows] @ queries.T, rows))
    )


EMBEDDING_METHOD = {
    "evidently": "ModelDriftMethod",
    "bootstrap": False,
    "score": "ROC AUC",
    "rows": "distinct rows of the window vs the reference queries",
}


def reference_spec(
    queries: np.ndarray,
    held_out: Sequence[bool] | np.ndarray,
    corpus: np.ndarray,
    query_rows: Sequence[dict[str, float]],
    dim: int,
    window_rows: int,
    *,
    precision: str = "fp32",
    splits: int = DEFAULT_SPLITS,
    seed: int = 0,
    alarm_signals: Sequence[str] = DEFAULT_ALARM_SIGNALS,
    embedder: dict[str, Any] | None = None,
) -> ReferenceSpec:
    """reference.json for embedded queries (`held_out` marks those never trained on) and a corpus sample: the
    baselines and the calibration. `write_reference` stores it beside the arrays."""
    held = _mask(np.asarray(held_out, dtype=bool) if held_out is not None else None, len(queries))
    calibration = calibrate(
        queries,
        {name: [row[name] for row in query_rows] for name in DESCRIPTOR_NAMES},
        corpus,
        window_rows,
        splits=splits,
        seed=seed,
        alarm_signals=alarm_signals,
        held_out=held,
    )
    stats = reference_statistics(queries, held, corpus)
    return ReferenceSpec(
        dim=dim,
        precision=precision,
        query_count=len(queries),
        corpus_count=len(corpus),
        descriptor_names=DESCRIPTOR_NAMES,
        embedding_method=EMBEDDING_METHOD,
        retrieval_reference_mean=stats.retrieval_mean,
        novelty_cutoff=stats.novelty_cutoff,
        held_out_count=int(held.sum()),
        calibration=calibration,
        created_at=datetime.datetime.now(datetime.UTC).isoformat(),
        embedder=embedder or {},
    )


def calibrate(
    queries: np.ndarray,
    query_descriptors: dict[str, Sequence[float]],
    corpus: np.ndarray,
    window_rows: int,
    splits: int = DEFAULT_SPLITS,
    k: float = DEFAULT_K,
    seed: int = 0,
    alarm_signals: Sequence[str] = DEFAULT_ALARM_SIGNALS,
    held_out: Sequence[bool] | np.ndarray | None = None,
) -> Calibration:
    """Null distributions and thresholds for each signal, for windows of `window_rows` rows.

    `held_out` marks the queries the model was not trained on (default: none, so nothing can alarm)."""
    started = time.perf_counter()
    queries = np.asarray(queries, dtype=np.float32)
    _check(queries, window_rows, splits, k, alarm_signals)
    held = _mask(held_out, len(queries))
    stats = reference_statistics(queries, held, corpus)
    pool = np.flatnonzero(stats.baseline)  # pseudo-windows come from the queries that stand for new traffic
    current_rows = min(window_rows, len(pool) // 2)
    nearest = nearest_doc_cosine(queries, corpus)
    similarity = queries[pool] @ queries.T  # [pool, queries]: every novelty score a split needs
    descriptors = {name: np.asarray(values, dtype=np.float64) for name, values in query_descriptors.items()}
    rng = np.random.default_rng(seed)
    scores: dict[str, list[float]] = {name: [] for name in SIGNALS}
    for _ in range(splits):
        chosen = rng.permutation(len(pool))
        window_at, base_at = chosen[:current_rows], chosen[current_rows:]  # positions in `pool`
        window, base = pool[window_at], pool[base_at]
        rest = np.setdiff1d(np.arange(len(queries)), window)
        scores["embedding"].append(embedding_drift_score(queries[window], queries[rest]))
        scores["retrieval"].append(retrieval_drop(nearest[window], nearest[base]))
        # Novelty against the pseudo-reference `rest`, with the cutoff its own baseline queries give.
        window_scores = similarity[window_at][:, rest].max(axis=1)
        base_scores = _leave_one_out(similarity[base_at][:, rest], np.searchsorted(rest, base))
        scores["novelty"].append(tail_share(window_scores, novelty_cutoff(base_scores)))
        scores["descriptors"].append(
            descriptor_drift_share(
                {name: values[window] for name, values in descriptors.items()},
                {name: values[rest] for name, values in descriptors.items()},
            )
        )
    held_count = int(held.sum())
    baseline_held_out = enough_held_out(held_count)
    signals = tuple(
        _threshold(name, np.asarray(scores[name]), k, name in alarm_signals, held_count) for name in SIGNALS
    )
    # Novelty: the exact threshold for a full window of distinct rows (each window gets its own, for its
    # effective rows); the resampled null above stays in the record, as a check on it.
    novelty_at = novelty_threshold(window_rows, len(pool), NOVELTY_ALPHA, FLOORS["novelty"])
    signals = tuple(replace(s, threshold=novelty_at) if s.name == "novelty" else s for s in signals)
    return Calibration(
        window_rows=window_rows,
        current_rows=current_rows,
        reference_rows=len(queries),
        splits=splits,
        k=k,
        seed=seed,
        seconds=round(time.perf_counter() - started, 2),
        signals=signals,
        held_out_rows=held_count,
        null_from="held-out queries" if baseline_held_out else "reference queries (too few held-out)",
    )


def _leave_one_out(similarity: np.ndarray, own_columns: np.ndarray) -> np.ndarray:
    """Row i's best cosine to any column but its own (`own_columns[i]`): the score of a query new to the rest."""
    similarity = np.array(similarity, dtype=np.float32, copy=True)
    similarity[np.arange(len(own_columns)), own_columns] = -np.inf
    return similarity.max(axis=1)


def _threshold(name: str, null: np.ndarray, k: float, wanted: bool, held_out: int) -> SignalThreshold:
    mean, std, top = float(null.mean()), float(null.std()), float(null.max())
    excluded = None
    if wanted and held_out < MIN_HELD_OUT[name]:
        excluded = (
            f"{held_out} held-out queries (never trained on), {MIN_HELD_OUT[name]} needed to calibrate "
            f"{name} on unseen traffic: reported, not in the alarm"
        )
    return SignalThreshold(
        name=name,
        threshold=round(max(mean + k * std, top, FLOORS[name]), 4),
        null_mean=mean,
        null_std=std,
        null_max=top,
        floor=FLOORS[name],
        in_alarm=wanted and excluded is None,
        excluded=excluded,
    )


def _mask(held_out: Sequence[bool] | np.ndarray | None, rows: int) -> np.ndarray:
    if held_out is None:
        return np.zeros(rows, dtype=bool)
    mask = np.asarray(held_out)
    if mask.shape != (rows,) or mask.dtype != bool:
        raise DriftInputError(
            f"held_out: expected {rows} booleans (one per reference query, True = never trained "
            f"on), got {mask.dtype} {mask.shape}"
        )
    return mask


def _check(
    queries: np.ndarray, window_rows: int, splits: int, k: float, alarm_signals: Sequence[str]
) -> None:
    if queries.ndim != 2 or len(queries) < MIN_REFERENCE_QUERIES:
        raise DriftInputError(
            f"calibration needs at least {MIN_REFERENCE_QUERIES} reference queries [rows, dim]; "
            f"got shape {queries.shape}: pass more eval queries to build_reference"
        )
    if isinstance(window_rows, bool) or not isinstance(window_rows, int) or window_rows < 10:
        raise DriftInputError(
            f"window_rows: expected an integer >= 10 (EMBEDGATE_DRIFT_WINDOW_ROWS), got {window_rows!r}"
        )
    if isinstance(splits, bool) or not isinstance(splits, int) or splits < 5:
        raise DriftInputError(
            f"splits: expected an integer >= 5 (the null distribution needs a spread), got {splits!r}"
        )
    if not isinstance(k, (int, float)) or isinstance(k, bool) or k < 0:
        raise DriftInputError(
            f"k: expected a number >= 0 (standard deviations above the null mean), got {k!r}"
        )
    unknown = [name for name in alarm_signals if name not in SIGNALS]
    if unknown or not alarm_signals:
        raise DriftInputError(
            f"alarm_signals: expected a non-empty subset of {list(SIGNALS)}, got {list(alarm_signals)}"
        )
