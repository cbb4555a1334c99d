"""general_domain: a general-domain STS correlation may not drop more than `tolerance` below the baseline's
(catastrophic forgetting). Skipped, with the reason in its row, when no STS results were produced.

`dim: all` (the default policy's) checks every dim both models were scored at, one row each: a client may ask for
any Matryoshka dim (`dimensions: 64`), and small dims can forget what the full dim keeps. `tolerance_per_dim`
({64: 0.05}) sets a dim's own threshold; the others use `tolerance`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gates.evaluation.results import StsMetric
from gates.quality_gate.check_base import CheckContext, CheckSpec, GateRow, Severity, compared_row


class GeneralDomainCheck(CheckSpec):
    kind: Literal["general_domain"]
    dim: int | Literal["serving", "all"] = "serving"
    metric: StsMetric = "spearman"
    tolerance: float = Field(0.02, ge=0)
    tolerance_per_dim: dict[int, float] = Field(default_factory=dict)
    severity: Severity = "warning"

    def tolerance_at(self, dim: int) -> float:
        return self.tolerance_per_dim.get(dim, self.tolerance)


def evaluate(check: GeneralDomainCheck, ctx: CheckContext) -> list[GateRow]:
    if check.dim != "all":
        return _at(check, ctx, ctx.dim(check.dim))
    scored = {e.dim for e in ctx.candidate.sts if e.backend == check.backend} & {
        e.dim for e in ctx.baseline.sts if e.backend == check.backend
    }
    if not scored:
        return _at(check, ctx, ctx.serving_dim)  # says what is missing
    return [row for dim in sorted(scored, reverse=True) for row in _at(check, ctx, dim)]


def _at(check: GeneralDomainCheck, ctx: CheckContext, dim: int) -> list[GateRow]:
    tolerance = check.tolerance_at(dim)
    rule, fields = f"delta >= -{tolerance:g}", {"tolerance": tolerance}
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
    ok = new - old >= -tolerance
    verdict = "within" if ok else "beyond"
    reason = (
        f"STS {check.metric} at {dim}d {new:.4f} vs {old:.4f}: delta {new - old:+.4f} {verdict} {tolerance:g}"
    )
    return [
        compared_row(
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
