"""One window against its version's reference: an Evidently report, three signals, one verdict.

    result, snapshot = compute_window(read_window(info, DESCRIPTOR_NAMES), load_reference(ref_dir))
    result.drifted            # True when a signal in the calibration's alarm set is above its threshold
    snapshot                  # the Evidently Snapshot (None when the window was skipped), for the workspace

The report holds, per window: the embedding drift score (Evidently's classifier method, no t-SNE), the drop in
mean nearest-document cosine below the held-out queries' mean, the share of novel rows (nearest reference query
below the held-out cutoff), the share of drifted descriptors (Evidently's DriftedColumnsCount), each descriptor's
drift test and mean (their distributions are the ValueDrift widgets), and each alarm threshold.
About 1 s for 500 rows x 384 dims here; Evidently is imported on the first call (7-15 s).
"""

from __future__ import annotations

import contextlib
import datetime
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from service.drift.reference import DriftReference
from service.drift.signals import effective_rows, nearest_doc_cosine, nearest_query_cosine
from service.drift.thresholds import novelty_window_threshold
from service.drift.windows import WindowData

EMBEDDINGS_NAME = "embedding"
NEAREST_COLUMN = "nearest_doc_cosine"
NOVELTY_COLUMN = "nearest_query_cosine"  # NaN for rows served below the reference dim


@dataclass(frozen=True)
class SignalResult:
    """One signal of one window. `score`/`drifted` are None when the window could not measure it (detail says)."""

    name: str
    score: float | None
    threshold: float
    drifted: bool | None
    in_alarm: bool
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class WindowDriftResult:
    """The verdict on one window; `to_dict()` is the JSON summary written per window."""

    window_id: str
    model_version: str
    rows: int
    embedding_rows: int
    started_at: str
    ended_at: str | None
    computed_at: str
    computed_at_unix: float
    drifted: bool
    signals: tuple[SignalResult, ...]
    skipped_reason: str | None = None
    seconds: float = 0.0
    snapshot_id: str | None = None
    # the window's novel queries (service/drift/novelty.py NovelQueries.to_dict()); None when not measured
    novel: dict[str, Any] | None = None

    @property
    def skipped(self) -> bool:
        return self.skipped_reason is not None

    def signal(self, name: str) -> SignalResult | None:
        return next((signal for signal in self.signals if signal.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "signals": [signal.to_dict() for signal in self.signals]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WindowDriftResult:
        return cls(**{**data, "signals": tuple(SignalResult(**signal) for signal in data["signals"])})


def compute_window(window: WindowData, reference: DriftReference) -> tuple[WindowDriftResult, Any]:
    """Compare `window` with `reference`; returns the result and the Evidently Snapshot (None if skipped)."""
    started = time.perf_counter()
    calibration = reference.spec.calibration
    embeddings, comparable = window.embeddings_at(reference.dim)
    base = _base_fields(window, int(comparable.sum()))
    if window.rows < calibration.current_rows:
        reason = (
            f"window has {window.rows} rows; the reference was calibrated on windows of "
            f">= {calibration.current_rows} (set EMBEDGATE_DRIFT_WINDOW_ROWS >= {calibration.current_rows}, "
            f"or rebuild the reference with window_rows={window.rows})"
        )
        return _skipped(base, calibration, reason, started), None
    measure_vectors = len(embeddings) >= calibration.current_rows
    thresholds = {signal.name: signal.threshold for signal in calibration.signals}
    if measure_vectors:  # novelty's threshold depends on how many independent rows this window holds
        thresholds["novelty"] = novelty_window_threshold(reference.spec, effective_rows(embeddings))
    current = _frame(window.descriptors, embeddings, comparable, reference)
    novel = _novel(window, embeddings, comparable, reference) if measure_vectors else None
    report, metrics = _report(reference, measure_vectors, thresholds, novel)
    with _quiet_correlations():
        snapshot = report.run(
            _dataset(current, reference, measure_vectors),
            _dataset(_reference_frame(reference), reference, measure_vectors),
            timestamp=_window_time(window),
            name=window.info.window_id,
            metadata={
                "window_id": window.info.window_id,
                "model_version": window.info.model_version,
                "rows": str(window.rows),
            },
        )
    values = {item["id"]: item["value"] for item in snapshot.dict()["metrics"]}
    signals = []
    for name, metric in metrics.items():
        threshold = calibration.signal(name)
        limit = thresholds[name]
        if metric is None:
            detail = {
                "reason": f"only {len(embeddings)} of {window.rows} rows were served at dim >= "
                f"{reference.dim} (the reference dim); need {calibration.current_rows}"
            }
            signals.append(SignalResult(name, None, threshold.threshold, None, threshold.in_alarm, detail))
            continue
        value = values[metric.metric_id]
        score = float(value["share"] if isinstance(value, dict) else value)
        signals.append(
            SignalResult(
                name,
                score,
                limit,
                score > limit,
                threshold.in_alarm,
                _detail(name, values, current, reference, report),
            )
        )
    drifted = any(signal.drifted for signal in signals if signal.in_alarm)
    result = WindowDriftResult(
        **base,
        drifted=drifted,
        signals=tuple(signals),
        seconds=round(time.perf_counter() - started, 3),
        novel=novel.to_dict() if novel is not None else None,
    )
    return result, snapshot


def _novel(
    window: WindowData, embeddings: np.ndarray, comparable: np.ndarray, reference: DriftReference
) -> Any:
    """The window's novel rows, grouped (the rows the novelty signal counts), with their texts as captured."""
    from service.drift.novelty import novel_queries

    texts = window.texts or (None,) * window.rows
    row_ids = np.flatnonzero(comparable)
    return novel_queries(
        embeddings,
        [texts[row] for row in row_ids],
        reference.queries,
        reference.query_texts,
        reference.spec.novelty_cutoff,
        row_ids=row_ids,
    )


def descriptor_drift_share(current: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> float:
    """Share of descriptors whose distribution drifted, by the same Evidently metric the window report uses."""
    import pandas as pd
    from evidently import Dataset, Report

    from service.drift.descriptors import DESCRIPTOR_NAMES

    metric = _descriptor_count_metric()
    frames = [
        pd.DataFrame({name: columns[name] for name in DESCRIPTOR_NAMES}) for columns in (current, reference)
    ]
    definition = _definition(None)
    with _quiet_correlations():
        snapshot = Report([metric]).run(
            Dataset.from_pandas(frames[0], data_definition=definition),
            Dataset.from_pandas(frames[1], data_definition=definition),
        )
    return float(snapshot.dict()["metrics"][0]["value"]["share"])


@contextlib.contextmanager
def _quiet_correlations():
    """Evidently's column drift also correlates the descriptor columns with each other (np.corrcoef); a descriptor
    that is constant in a window (no digits in any query, say) makes that 0/0 and numpy warns once per window: a
    pipeline's calibration printed hundreds of such lines. No signal of ours reads those correlations.

    Its K-S test (scipy ks_2samp) also warns "Exact calculation unsuccessful" when the exact p-value rounds just
    above 1 (two equal-sized samples that barely differ, as calibration's pseudo-windows of half the queries are)
    and then uses the asymptotic p-value, which is the right answer there: nothing for a pipeline's user to do."""
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "ks_2samp: Exact calculation unsuccessful", RuntimeWarning)
        yield


# ---- the report ----
def _report(
    reference: DriftReference, measure_vectors: bool, thresholds: dict[str, float], novel: Any = None
) -> tuple[Any, dict[str, Any]]:
    from evidently import Report
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import ModelDriftMethod
    from evidently.metrics import MeanValue, ValueDrift

    from service.drift.descriptors import DESCRIPTOR_NAMES
    from service.drift.evidently_metrics import (
        EmbedgateEmbeddingDrift,
        EmbedgateMeanDrop,
        EmbedgateNovelQueries,
        EmbedgateTailShare,
        EmbedgateThreshold,
    )

    calibration = reference.spec.calibration
    embedding = retrieval = novelty = None
    if measure_vectors:
        embedding = EmbedgateEmbeddingDrift(
            embeddings_name=EMBEDDINGS_NAME,
            drift_method=ModelDriftMethod(
                threshold=calibration.signal("embedding").threshold, bootstrap=False
            ),
        )
        # Against the held-out queries' mean, not every reference query's: see service/drift/calibration.py.
        retrieval = EmbedgateMeanDrop(
            column=NEAREST_COLUMN, reference_mean=reference.spec.retrieval_reference_mean
        )
        novelty = EmbedgateTailShare(column=NOVELTY_COLUMN, cutoff=reference.spec.novelty_cutoff)
    descriptors = _descriptor_count_metric()
    signal_metrics = {
        "embedding": embedding,
        "retrieval": retrieval,
        "novelty": novelty,
        "descriptors": descriptors,
    }
    metrics: list[Any] = [metric for metric in signal_metrics.values() if metric is not None]
    metrics += [EmbedgateThreshold(signal=name, value=value) for name, value in thresholds.items()]
    if measure_vectors:
        metrics += [MeanValue(column=NEAREST_COLUMN), MeanValue(column=NOVELTY_COLUMN)]
    if novel is not None:
        from service.drift.novelty import table_rows

        header, rows, title = table_rows(novel)
        metrics.append(
            EmbedgateNovelQueries(groups=novel.novel_groups, title=title, header=header, table=rows)
        )
    metrics += [ValueDrift(column=name) for name in DESCRIPTOR_NAMES]
    metrics += [MeanValue(column=name) for name in DESCRIPTOR_NAMES]
    return Report(metrics), signal_metrics


def _descriptor_count_metric() -> Any:
    from evidently.metrics import DriftedColumnsCount

    from service.drift.descriptors import DESCRIPTOR_NAMES

    return DriftedColumnsCount(columns=list(DESCRIPTOR_NAMES))


def _definition(reference: DriftReference | None, measure_vectors: bool = False) -> Any:
    from evidently import DataDefinition

    from service.drift.descriptors import DESCRIPTOR_NAMES

    numerical = list(DESCRIPTOR_NAMES)
    embeddings = None
    if reference is not None and measure_vectors:
        numerical += [NEAREST_COLUMN, NOVELTY_COLUMN]
        embeddings = {EMBEDDINGS_NAME: _vector_columns(reference.dim)}
    return DataDefinition(numerical_columns=numerical, embeddings=embeddings)


def _dataset(frame: Any, reference: DriftReference, measure_vectors: bool) -> Any:
    from evidently import Dataset

    return Dataset.from_pandas(frame, data_definition=_definition(reference, measure_vectors))


def _frame(
    descriptors: dict[str, np.ndarray],
    embeddings: np.ndarray,
    comparable: np.ndarray,
    reference: DriftReference,
) -> Any:
    """Window rows: descriptors for all; vectors, nearest-document and nearest-query cosine where served at >=
    reference dim."""
    import pandas as pd

    rows = len(comparable)
    vectors = np.full((rows, reference.dim), np.nan, dtype=np.float32)
    vectors[comparable] = embeddings
    nearest, novelty = np.full(rows, np.nan), np.full(rows, np.nan)
    if len(embeddings):
        nearest[comparable] = nearest_doc_cosine(embeddings, reference.corpus)
        novelty[comparable] = nearest_query_cosine(embeddings, reference.queries)
    columns = {**descriptors, NEAREST_COLUMN: nearest, NOVELTY_COLUMN: novelty}
    return pd.concat(
        [pd.DataFrame(columns), pd.DataFrame(vectors, columns=_vector_columns(reference.dim))], axis=1
    )


def _reference_frame(reference: DriftReference) -> Any:
    import pandas as pd

    columns = {
        **reference.query_descriptors,
        NEAREST_COLUMN: reference.query_nearest,
        NOVELTY_COLUMN: reference.query_novelty,
    }
    return pd.concat(
        [pd.DataFrame(columns), pd.DataFrame(reference.queries, columns=_vector_columns(reference.dim))],
        axis=1,
    )


def _vector_columns(dim: int) -> list[str]:
    return [f"e{index:04d}" for index in range(dim)]


def _detail(name: str, values: dict[str, Any], current: Any, reference: DriftReference, report: Any) -> dict:
    """What a reader needs to see why a signal moved (also in the JSON summary)."""
    from evidently.metrics import ValueDrift

    from service.drift.descriptors import DESCRIPTOR_NAMES

    if name == "embedding":
        return {"method": "Evidently classifier (ModelDriftMethod) ROC AUC on distinct rows"}
    if name == "retrieval":
        return {
            "window_mean": float(np.nanmean(current[NEAREST_COLUMN])),
            "reference_mean": float(reference.spec.retrieval_reference_mean),
            "baseline": "held-out queries" if reference.spec.held_out_count else "all reference queries",
        }
    if name == "novelty":
        vectors = current[_vector_columns(reference.dim)].dropna().to_numpy(np.float32)
        return {
            "cutoff": float(reference.spec.novelty_cutoff),
            "effective_rows": effective_rows(vectors),
            "threshold": "Beta-Binomial 1 - alpha quantile for the effective rows (calibration.py)",
        }
    by_column = {}
    for metric in report.metrics:
        column = getattr(metric, "column", None)
        if isinstance(metric, ValueDrift) and column in DESCRIPTOR_NAMES:
            by_column[column] = {
                "p_value": float(values[metric.metric_id]),
                "window_mean": float(np.mean(current[column])),
                "reference_mean": float(np.mean(reference.query_descriptors[column])),
            }
    return {"per_descriptor": by_column}


def _base_fields(window: WindowData, embedding_rows: int) -> dict[str, Any]:
    now = datetime.datetime.now(datetime.UTC)
    ended = (
        datetime.datetime.fromtimestamp(float(window.times.max()), datetime.UTC).isoformat()
        if window.rows
        else None
    )
    return {
        "window_id": window.info.window_id,
        "model_version": window.info.model_version,
        "rows": window.rows,
        "embedding_rows": embedding_rows,
        "started_at": window.info.started_at,
        "ended_at": ended,
        "computed_at": now.isoformat(),
        "computed_at_unix": now.timestamp(),
    }


def skipped_result(window: WindowData, reason: str) -> WindowDriftResult:
    """The verdict for a window that cannot be judged (no reference for its version): never an alarm."""
    return WindowDriftResult(**_base_fields(window, 0), drifted=False, signals=(), skipped_reason=reason)


def _skipped(base: dict[str, Any], calibration: Any, reason: str, started: float) -> WindowDriftResult:
    signals = tuple(
        SignalResult(s.name, None, s.threshold, None, s.in_alarm, {"reason": reason})
        for s in calibration.signals
    )
    return WindowDriftResult(
        **base,
        drifted=False,
        signals=signals,
        skipped_reason=reason,
        seconds=round(time.perf_counter() - started, 3),
    )


def _window_time(window: WindowData) -> datetime.datetime:
    """The snapshot's time: when the window's last row was served (UTC, naive as Evidently stores it)."""
    last = float(window.times.max()) if window.rows else time.time()
    return datetime.datetime.fromtimestamp(last, datetime.UTC).replace(tzinfo=None)
