"""What every gate check shares: the spec base class, the row a check produces, and the context it reads.

A check kind is one module in `gates.quality_gate.checks` holding its spec (a pydantic model validated when the
policy loads) and its evaluator (spec, context) -> rows, the way sentence-transformers keeps one loss per module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gates.evaluation.results import CORRELATION_METRICS, Backend, EvalResults, ParityRecord
from gates.evaluation.retrieval_metrics import parse_metric_key

if TYPE_CHECKING:
    from gates.evaluation.significance import PairedComparison

Severity = Literal["critical", "warning"]
Status = Literal["pass", "fail", "skip"]


class Spec(BaseModel):
    """Frozen, strict: an unknown key or a NaN in a policy is an error, not a silent default."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class CheckSpec(Spec):
    """Fields every check has: a unique name, a severity, and the backend and dim it reads."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    severity: Severity = "critical"
    dim: int | Literal["serving"] = "serving"
    backend: Backend = "onnx-fp32"

    @field_validator("dim")
    @classmethod
    def _positive_dim(cls, dim: int | str) -> int | str:
        if isinstance(dim, int) and dim <= 0:
            raise ValueError(f"dim must be a positive int or 'serving', got {dim}")
        return dim


def retrieval_metric(key: str) -> str:
    """Validate a metric key such as ndcg@10 (raises MetricInputError, a ValueError, naming the expected form)."""
    parse_metric_key(key)
    return key


def gate_metric(key: str) -> str:
    """A metric a check can compare: a retrieval key (ndcg@10, ...) or, for an STS eval set, spearman/pearson."""
    if key in CORRELATION_METRICS:
        return key
    try:
        return retrieval_metric(key)
    except ValueError as err:
        raise ValueError(
            f"{err}; or, for an STS eval set (scored pairs), one of {', '.join(CORRELATION_METRICS)}"
        ) from None


@dataclass(frozen=True)
class GateRow:
    """The outcome of one check on one metric / graph."""

    check: str
    kind: str
    metric: str
    dim: int
    backend: str
    candidate: float | None
    baseline: float | None  # retention: the candidate's reference backend; parity: none
    delta: float | None
    threshold: str  # human-readable rule
    threshold_fields: Mapping[str, Any]  # the same rule as numbers
    status: Status
    severity: Severity
    reason: str
    p_value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "threshold_fields", MappingProxyType(dict(self.threshold_fields)))

    @property
    def passed(self) -> bool | None:
        """True / False, or None when the check was skipped."""
        return None if self.status == "skip" else self.status == "pass"

    @property
    def blocks(self) -> bool:
        return self.status == "fail" and self.severity == "critical"

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "kind": self.kind,
            "metric": self.metric,
            "dim": self.dim,
            "backend": self.backend,
            "candidate": self.candidate,
            "baseline": self.baseline,
            "delta": self.delta,
            "threshold": self.threshold,
            "threshold_fields": dict(self.threshold_fields),
            "p_value": self.p_value,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "status": self.status,
            "passed": self.passed,
            "severity": self.severity,
            "reason": self.reason,
        }


class PolicySettings(Protocol):
    """The policy-wide settings an evaluator reads (gates.quality_gate.policy.GatePolicy has them). A protocol and
    not GatePolicy itself: the policy imports every check, so a check importing the policy would close a circle."""

    @property
    def primary_metric(self) -> str: ...

    @property
    def serve_precision(self) -> Literal["fp32", "int8"]: ...


@dataclass(frozen=True)
class CheckContext:
    """What an evaluator reads: the policy, both models' results, the export's parity record, the serving dim."""

    policy: PolicySettings
    candidate: EvalResults
    baseline: EvalResults
    parity: ParityRecord | None
    serving_dim: int

    def dim(self, dim: int | str) -> int:
        return self.serving_dim if dim == "serving" else int(dim)


def compared_row(
    check: CheckSpec,
    *,
    metric: str,
    dim: int,
    candidate: float,
    baseline: float,
    threshold: str,
    threshold_fields: Mapping[str, Any],
    ok: bool,
    reason: str,
    severity: Severity,
    comparison: PairedComparison | None = None,
) -> GateRow:
    """A row that compares a candidate value with a baseline (or reference) value on the check's backend."""
    return GateRow(
        check=check.name,
        kind=check.kind,
        metric=metric,
        dim=dim,
        backend=check.backend,
        candidate=candidate,
        baseline=baseline,
        delta=candidate - baseline,
        threshold=threshold,
        threshold_fields=threshold_fields,
        status="pass" if ok else "fail",
        severity=severity,
        reason=reason,
        p_value=comparison.p_value_greater if comparison else None,
        ci_low=comparison.ci_low if comparison else None,
        ci_high=comparison.ci_high if comparison else None,
    )
