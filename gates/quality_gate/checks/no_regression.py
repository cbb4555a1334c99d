"""no_regression: the candidate keeps each listed metric within `tolerance` of the baseline (a row per metric)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from gates.quality_gate.check_base import CheckContext, CheckSpec, GateRow, compared_row, gate_metric


class NoRegressionCheck(CheckSpec):
    kind: Literal["no_regression"]
    metric: tuple[str, ...] = Field(min_length=1)  # one metric or a list of them
    tolerance: float = Field(0.0, ge=0)  # absolute drop allowed

    @field_validator("metric", mode="before")
    @classmethod
    def _one_or_many(cls, metric: Any) -> Any:
        return (metric,) if isinstance(metric, str) else metric

    @field_validator("metric")
    @classmethod
    def _metrics(cls, metrics: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"metric lists a key twice: {list(metrics)}")
        return tuple(gate_metric(key) for key in metrics)


def evaluate(check: NoRegressionCheck, ctx: CheckContext) -> list[GateRow]:
    dim = ctx.dim(check.dim)
    rows = []
    for metric in check.metric:
        new = ctx.candidate.mean_metric(metric, check.backend, dim)
        old = ctx.baseline.mean_metric(metric, check.backend, dim)
        ok = new - old >= -check.tolerance
        verb = "within" if ok else "beyond"
        reason = f"delta {new - old:+.4f} is {verb} the allowed drop of {check.tolerance:g}"
        rows.append(
            compared_row(
                check,
                metric=metric,
                dim=dim,
                candidate=new,
                baseline=old,
                threshold=f"delta >= -{check.tolerance:g}",
                threshold_fields={"tolerance": check.tolerance},
                ok=ok,
                reason=reason,
                severity=check.severity,
            )
        )
    return rows
