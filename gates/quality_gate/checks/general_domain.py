"""general_domain: a general-domain STS correlation may not drop more than `tolerance` below the baseline's
(catastrophic forgetting). Skipped, with the reason in its row, when no STS results were produced.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gates.evaluation.results import StsMetric
from gates.quality_gate.check_base import CheckContext, CheckSpec, GateRow, Severity, compared_row


class GeneralDomainCheck(CheckSpec):
    kind: Literal["general_domain"]
    metric: StsMetric = "spearman"
    tolerance: float = Field(0.02, ge=0)
    severity: Severity = "warning"


def evaluate(check: GeneralDomainCheck, ctx: CheckContext) -> list[GateRow]:
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
