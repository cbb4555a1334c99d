"""Evidently metrics of our own, so every drift signal is a value in the Evidently snapshot (and a dashboard
series). Imports Evidently: import this module only where a drift computation runs.

    EmbedgateEmbeddingDrift   Evidently's embedding drift method (classifier ROC AUC) *without* the t-SNE that
                              `EmbeddingsDrift` always computes for its widget: 60 s of a 500 x 384 window here
                              (GUIDE: 26 of 27.5 s), while the drift method itself takes about 0.05 s.
    EmbedgateMeanDrop         reference mean minus current mean of a column (the retrieval signal)
    EmbedgateTailShare        share of current rows below a cutoff (the novelty signal)
    EmbedgateThreshold        the calibrated alarm threshold of a signal, recorded with every window so the
                              dashboard can draw it beside the score (Evidently panels have no threshold line)
    EmbedgateNovelQueries     the number of novel-query groups, and their table in the window's report

The UI reads these results as plain single values: it does not need this module to show them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from evidently.core.metric_types import SingleValue, SingleValueCalculation, SingleValueMetric
from evidently.legacy.metrics.data_drift.embedding_drift_methods import DriftMethod

from service.drift.signals import embedding_drift_score, retrieval_drop, tail_share


class EmbedgateEmbeddingDrift(SingleValueMetric):
    """Drift between the current and reference rows of one embedding (DataDefinition.embeddings name)."""

    embeddings_name: str
    drift_method: DriftMethod


class EmbedgateEmbeddingDriftCalculation(SingleValueCalculation[EmbedgateEmbeddingDrift]):
    def calculate(self, context: Any, current_data: Any, reference_data: Any) -> SingleValue:
        columns = context.data_definition.embeddings[self.metric.embeddings_name]
        # Rows served below the reference dim have no comparable vector (NaN): they are not part of this signal.
        current = current_data.as_dataframe()[columns].dropna().to_numpy(np.float32)
        reference = reference_data.as_dataframe()[columns].dropna().to_numpy(np.float32)
        return self.result(embedding_drift_score(current, reference, self.metric.drift_method))

    def display_name(self) -> str:
        return f"Embedding drift ({self.metric.embeddings_name}): classifier ROC AUC"


class EmbedgateMeanDrop(SingleValueMetric):
    """mean(reference[column]) - mean(current[column]); NaN rows are left out. `reference_mean`, when given, is
    the reference side's mean (the held-out queries', a subset of the reference rows)."""

    column: str
    reference_mean: float | None = None


class EmbedgateMeanDropCalculation(SingleValueCalculation[EmbedgateMeanDrop]):
    def calculate(self, context: Any, current_data: Any, reference_data: Any) -> SingleValue:
        current = current_data.as_dataframe()[self.metric.column].to_numpy(np.float64)
        if self.metric.reference_mean is not None:
            return self.result(retrieval_drop(current, np.asarray([self.metric.reference_mean])))
        reference = reference_data.as_dataframe()[self.metric.column].dropna().to_numpy(np.float64)
        return self.result(retrieval_drop(current, reference))

    def display_name(self) -> str:
        return f"Drop in mean {self.metric.column} (reference - current)"


class EmbedgateTailShare(SingleValueMetric):
    """Share of the current rows (NaN rows left out) whose `column` is below `cutoff`."""

    column: str
    cutoff: float


class EmbedgateTailShareCalculation(SingleValueCalculation[EmbedgateTailShare]):
    def calculate(self, context: Any, current_data: Any, reference_data: Any) -> SingleValue:
        return self.result(
            tail_share(
                current_data.as_dataframe()[self.metric.column].to_numpy(np.float64), self.metric.cutoff
            )
        )

    def display_name(self) -> str:
        return f"Share of rows with {self.metric.column} below {self.metric.cutoff:.3f}"


class EmbedgateThreshold(SingleValueMetric):
    """A signal's calibrated alarm threshold (a score above it drifts)."""

    signal: str
    value: float


class EmbedgateThresholdCalculation(SingleValueCalculation[EmbedgateThreshold]):
    def calculate(self, context: Any, current_data: Any, reference_data: Any) -> SingleValue:
        return self.result(float(self.metric.value))

    def display_name(self) -> str:
        return f"Alarm threshold: {self.metric.signal}"


class EmbedgateNovelQueries(SingleValueMetric):
    """A window's novel-query groups (service/drift/novelty.py), computed before the report: the value is how many
    groups there are, the widget the table of groups (examples, size, nearest reference query) that the window's
    report shows in the Evidently UI."""

    groups: int
    title: str
    header: list[str]
    table: list[list[str]]


class EmbedgateNovelQueriesCalculation(SingleValueCalculation[EmbedgateNovelQueries]):
    def calculate(self, context: Any, current_data: Any, reference_data: Any) -> SingleValue:
        from evidently.legacy.renderers.html_widgets import table_data

        result = self.result(float(self.metric.groups))
        result.widget = [
            table_data(column_names=self.metric.header, data=self.metric.table, title=self.metric.title)
        ]
        return result

    def display_name(self) -> str:
        return "Novel queries: groups of rows further from every reference query than the novelty cutoff"
