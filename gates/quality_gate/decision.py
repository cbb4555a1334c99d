"""Apply a gate policy to evaluation results: `decide` returns an immutable GateDecision, one row per check.

    from gates.quality_gate.decision import decide
    decision = decide(default_policy(), candidate, baseline, parity=ParityRecord.from_export_json(export))
    print(decision.table()); Path("gate/decision.json").write_text(decision.to_json())
    raise SystemExit(0 if decision.passed else 1)   # in the CLI, not here

Pure: no files, no printing. Anything a check needs that the results lack (metric, dim, backend, per-query
scores, parity record) raises MissingMetricError naming what is there: a gate never passes for want of
evidence. The one exception is by design: general_domain is skipped, with the reason in its row, when no STS
results were produced.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from gates.errors import MissingMetricError
from gates.evaluation.results import EvalResults, EvalResultsError, ParityRecord
from gates.evaluation.significance import PairedComparison, compare_paired
from gates.quality_gate.policy import (
    GatePolicy,
    GeneralDomainCheck,
    ImprovementCheck,
    NoRegressionCheck,
    ParityCheck,
    RetentionCheck,
    Severity,
)

Status = Literal["pass", "fail", "skip"]


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


@dataclass(frozen=True)
class GateDecision:
    """Every check's outcome; `passed` is False when any critical check failed."""

    rows: tuple[GateRow, ...]
    serving_dim: int
    serving_dim_reason: str
    policy: GatePolicy
    candidate: str
    baseline: str
    passed: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "passed", not any(row.blocks for row in self.rows))

    @property
    def failures(self) -> tuple[GateRow, ...]:
        return tuple(row for row in self.rows if row.blocks)

    @property
    def warnings(self) -> tuple[GateRow, ...]:
        return tuple(row for row in self.rows if row.status == "fail" and row.severity == "warning")

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "serving_dim": self.serving_dim,
            "serving_dim_reason": self.serving_dim_reason,
            "candidate": self.candidate,
            "baseline": self.baseline,
            "n_failures": len(self.failures),
            "n_warnings": len(self.warnings),
            "checks": [row.to_dict() for row in self.rows],
            "policy": self.policy.model_dump(mode="json"),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        """A fixed-width summary for the terminal: one line per row, the reason of each failure below it."""
        verdict = "PASSED" if self.passed else f"FAILED ({len(self.failures)} critical)"
        lines = [
            f"gate {verdict}: {self.candidate} vs {self.baseline}, policy {self.policy.name!r}, "
            f"serving dim {self.serving_dim} ({self.serving_dim_reason})",
            f"{'status':<6} {'sev':<4} {'check':<24} {'metric':<12} {'dim':>5} {'backend':<9} "
            f"{'candidate':>9} {'baseline':>9} {'delta':>8}  threshold",
        ]
        for row in self.rows:
            digits = 6 if row.kind == "parity" else 4  # 0.9999 vs 0.99999 is the whole point of parity
            lines.append(
                f"{row.status.upper():<6} {row.severity[:4]:<4} {row.check[:24]:<24} {row.metric[:12]:<12} "
                f"{row.dim:>5} {row.backend:<9} {_number(row.candidate, digits):>9} "
                f"{_number(row.baseline, digits):>9} {_number(row.delta, digits, signed=True):>8}  {row.threshold}"
            )
            if row.status != "pass":
                lines.append(f"{'':<12}-> {row.reason}")
        return "\n".join(lines)


def _number(value: float | None, digits: int, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def decide(
    policy: GatePolicy,
    candidate: EvalResults,
    baseline: EvalResults,
    parity: ParityRecord | None = None,
) -> GateDecision:
    """Apply `policy` to the candidate's and baseline's results (and the candidate's export parity)."""
    for results, role in ((candidate, "candidate"), (baseline, "baseline")):
        if results.model.label != role:
            raise EvalResultsError(
                f"the {role} argument holds results labelled {results.model.label!r} ({results.model.name}); "
                "pass decide(policy, candidate, baseline) in that order"
            )
    serving_dim, serving_reason = resolve_serving_dim(policy, candidate)
    context = _Context(policy, candidate, baseline, parity, serving_dim)
    rows: list[GateRow] = []
    for check in policy.checks:
        try:
            rows.extend(_EVALUATORS[check.kind](check, context))
        except MissingMetricError as err:
            raise MissingMetricError(f"check {check.name!r} ({check.kind}): {err}") from None
    return GateDecision(
        rows=tuple(rows),
        serving_dim=serving_dim,
        serving_dim_reason=serving_reason,
        policy=policy,
        candidate=candidate.model.name,
        baseline=baseline.model.name,
    )


def resolve_serving_dim(policy: GatePolicy, candidate: EvalResults) -> tuple[int, str]:
    """The dim to serve, and why: fixed by the policy, or the smallest dim that keeps `serving_dim_fraction`
    of the largest dim's primary metric (candidate, onnx-fp32)."""
    dims = candidate.dims("onnx-fp32")
    if not dims:
        raise MissingMetricError(
            f"the serving dim is chosen on the candidate's onnx-fp32 results, and there are none; available: "
            f"{candidate.available()}"
        )
    if policy.serving_dim != "auto":
        # raises, listing the evaluated dims, if the fixed dim was not evaluated
        candidate.retrieval_at("onnx-fp32", policy.serving_dim)
        return policy.serving_dim, "fixed by the policy"
    metric, full_dim = policy.primary_metric, dims[-1]
    full = candidate.mean_metric(metric, "onnx-fp32", full_dim)
    for dim in dims:
        value = candidate.mean_metric(metric, "onnx-fp32", dim)
        if value >= policy.serving_dim_fraction * full:
            kept = value / full if full > 0 else 1.0
            return dim, (
                f"auto: smallest dim keeping >= {policy.serving_dim_fraction:.0%} of d{full_dim}'s {metric}: "
                f"{value:.4f} = {kept:.1%} of {full:.4f}"
            )
    raise AssertionError("unreachable: the full dim always keeps 100% of itself")


@dataclass(frozen=True)
class _Context:
    policy: GatePolicy
    candidate: EvalResults
    baseline: EvalResults
    parity: ParityRecord | None
    serving_dim: int

    def dim(self, dim: int | str) -> int:
        return self.serving_dim if dim == "serving" else int(dim)


def _improvement(check: ImprovementCheck, ctx: _Context) -> list[GateRow]:
    dim = ctx.dim(check.dim)
    new = ctx.candidate.mean_metric(check.metric, check.backend, dim)
    old = ctx.baseline.mean_metric(check.metric, check.backend, dim)
    delta = new - old
    relative = delta / old if old > 0 else (math.inf if delta > 0 else 0.0)
    rule = f"delta > 0, >= {check.min_absolute:g} and >= {check.min_relative:.1%} of baseline"
    fields: dict[str, Any] = {"min_absolute": check.min_absolute, "min_relative": check.min_relative}
    problems = []
    if delta <= 0:
        problems.append(f"no improvement: delta {delta:+.4f}")
    elif delta < check.min_absolute:
        problems.append(f"delta {delta:+.4f} < min_absolute {check.min_absolute:g}")
    if delta > 0 and relative < check.min_relative:
        problems.append(f"relative delta {relative:+.2%} < min_relative {check.min_relative:.2%}")
    comparison = None
    if check.significance is not None:
        sig = check.significance
        comparison = compare_paired(
            ctx.candidate.per_query_metric(check.metric, check.backend, dim),
            ctx.baseline.per_query_metric(check.metric, check.backend, dim),
            method=sig.test,
            confidence=sig.confidence,
            n_resamples=sig.n_resamples,
            seed=sig.seed,
        )
        rule += f"; {sig.test} p < {sig.alpha:g} and {sig.confidence:.0%} CI low > 0"
        fields.update(sig.model_dump())
        if comparison.p_value_greater >= sig.alpha:
            problems.append(f"not significant: p {comparison.p_value_greater:.4f} >= alpha {sig.alpha:g}")
        if comparison.ci_low <= 0:
            problems.append(
                f"{sig.confidence:.0%} CI [{comparison.ci_low:+.4f}, {comparison.ci_high:+.4f}] includes 0"
            )
    evidence = (
        f"; p {comparison.p_value_greater:.4f}, {comparison.confidence:.0%} CI "
        f"[{comparison.ci_low:+.4f}, {comparison.ci_high:+.4f}] over {comparison.n} queries"
        if comparison
        else ""
    )
    reason = "; ".join(problems) if problems else f"improves by {delta:+.4f} ({relative:+.1%}){evidence}"
    return [
        _compared_row(
            check,
            metric=check.metric,
            dim=dim,
            candidate=new,
            baseline=old,
            threshold=rule,
            threshold_fields=fields,
            ok=not problems,
            reason=reason,
            severity=check.severity,
            comparison=comparison,
        )
    ]


def _no_regression(check: NoRegressionCheck, ctx: _Context) -> list[GateRow]:
    dim = ctx.dim(check.dim)
    rows = []
    for metric in check.metric:
        new = ctx.candidate.mean_metric(metric, check.backend, dim)
        old = ctx.baseline.mean_metric(metric, check.backend, dim)
        ok = new - old >= -check.tolerance
        verb = "within" if ok else "beyond"
        reason = f"delta {new - old:+.4f} is {verb} the allowed drop of {check.tolerance:g}"
        rows.append(
            _compared_row(
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


def _parity(check: ParityCheck, ctx: _Context) -> list[GateRow]:
    if ctx.parity is None:
        raise MissingMetricError(
            "needs the export's parity record and none was given; pass "
            "parity=ParityRecord.from_export_json(<run>/onnx/export.json)"
        )
    graphs = ctx.parity.select(check.backend, None if check.dim == "all" else ctx.dim(check.dim))
    rows = []
    for graph in sorted(graphs, key=lambda g: g.dim):
        ok = graph.min_cosine >= check.threshold
        where = f" ({graph.graph})" if graph.graph else ""
        relation = ">=" if ok else "<"
        reason = (
            f"min cosine to the PyTorch model {graph.min_cosine:.6f}{where} {relation} {check.threshold:g}"
        )
        rows.append(
            GateRow(
                check=check.name,
                kind=check.kind,
                metric="min_cosine",
                dim=graph.dim,
                backend=graph.backend,
                candidate=graph.min_cosine,
                baseline=None,
                delta=None,
                threshold=f"min cosine >= {check.threshold:g}",
                threshold_fields={"threshold": check.threshold},
                status="pass" if ok else "fail",
                severity=check.severity,
                reason=reason,
            )
        )
    return rows


def _retention(check: RetentionCheck, ctx: _Context) -> list[GateRow]:
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
        _compared_row(
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


def _general_domain(check: GeneralDomainCheck, ctx: _Context) -> list[GateRow]:
    dim = ctx.dim(check.dim)
    rule, fields = f"delta >= -{check.tolerance:g}", {"tolerance": check.tolerance}
    lacking = [r.model.label for r in (ctx.candidate, ctx.baseline) if not r.sts]
    if lacking:
        reason = (
            f"skipped: no general-domain STS results for the {' and the '.join(lacking)}; "
            "evaluate with an STS set to apply this check"
        )
        return [
            GateRow(
                check=check.name,
                kind=check.kind,
                metric=f"sts_{check.metric}",
                dim=dim,
                backend=check.backend,
                candidate=None,
                baseline=None,
                delta=None,
                threshold=rule,
                threshold_fields=fields,
                status="skip",
                severity=check.severity,
                reason=reason,
            )
        ]
    new = ctx.candidate.sts_metric(check.metric, check.backend, dim)
    old = ctx.baseline.sts_metric(check.metric, check.backend, dim)
    ok = new - old >= -check.tolerance
    verdict = "within" if ok else "beyond"
    reason = (
        f"STS {check.metric} {new:.4f} vs {old:.4f}: delta {new - old:+.4f} {verdict} {check.tolerance:g}"
    )
    return [
        _compared_row(
            check,
            metric=f"sts_{check.metric}",
            dim=dim,
            candidate=new,
            baseline=old,
            threshold=rule,
            threshold_fields=fields,
            ok=ok,
            reason=reason,
            severity=check.severity,
        )
    ]


def _compared_row(
    check: ImprovementCheck | NoRegressionCheck | RetentionCheck | GeneralDomainCheck,
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


_EVALUATORS = {
    "improvement": _improvement,
    "no_regression": _no_regression,
    "parity": _parity,
    "retention": _retention,
    "general_domain": _general_domain,
}
