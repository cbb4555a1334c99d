"""retention: int8 keeps >= `fraction` of the candidate's fp32 metric. Severity `auto` is critical only when the
policy serves int8 (a warning while int8 is not what ships).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from gates.evaluation.results import Backend
from gates.quality_gate.check_base import (
    CheckContext,
    CheckSpec,
    GateRow,
    Severity,
    compared_row,
    gate_metric,
)


class RetentionCheck(CheckSpec):
    kind: Literal["retention"]
    metric: str | None = None  # None: the policy's primary metric
    backend: Backend = "onnx-int8"
    reference_backend: Backend = "onnx-fp32"
    fraction: float = Field(0.99, gt=0, le=1)
    severity: Severity | Literal["auto"] = "auto"

    @field_validator("metric")
    @classmethod
    def _metric(cls, key: str | None) -> str | None:
        return None if key is None else gate_metric(key)


def evaluate(check: RetentionCheck, ctx: CheckContext) -> list[GateRow]:
    dim = ctx.dim(check.dim)
    metric = check.metric or ctx.policy.primary_metric
    kept = ctx.candidate.mean_metric(metric, check.backend, dim)
    reference = ctx.candidate.mean_metric(metric, check.reference_backend, dim)
    floor = check.fraction * reference
    ok = kept >= floor
    share = kept / reference if reference > 0 else 1.0
    severity: Severity = (
        check.severity
        if check.severity != "auto"
        else "critical"
        if ctx.policy.serve_precision == "int8"
        else "warning"
    )
    reason = (
        f"{check.backend} keeps {share:.2%} of the candidate's {check.reference_backend} {metric} "
        f"({kept:.4f} vs {reference:.4f}); needs {check.fraction:.0%}"
    )
    rule = f"{check.backend} >= {check.fraction:g} x {check.reference_backend} ({floor:.4f})"
    fields = {"fraction": check.fraction, "reference_backend": check.reference_backend}
    return [
        compared_row(
            check,
            metric=metric,
            dim=dim,
            candidate=kept,
            baseline=reference,
            threshold=rule,
            threshold_fields=fields,
            ok=ok,
            reason=reason,
            severity=severity,
        )
    ]
