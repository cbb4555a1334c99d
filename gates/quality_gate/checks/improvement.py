"""improvement: the candidate beats the baseline on a retrieval metric, by a margin, and (with
`significance`) beyond noise: one-sided paired p < alpha and the bootstrap CI of the delta above 0.

The significance test is the paired randomization test (Fisher 1935; Smucker, Allan & Carterette, "A Comparison
of Statistical Significance Tests for Information Retrieval Evaluation", CIKM 2007) over per-query scores. On an
STS eval set the metric is a correlation (spearman, pearson), one number over all pairs: its test is a paired
bootstrap over the pairs (`test: bootstrap`; gates.evaluation.significance.compare_correlations).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from gates.errors import MissingMetricError
from gates.evaluation.results import CORRELATION_METRICS
from gates.evaluation.significance import SignificanceTest, compare_correlations, compare_paired
from gates.quality_gate.check_base import (
    CheckContext,
    CheckSpec,
    GateRow,
    Spec,
    compared_row,
    gate_metric,
)


class Significance(Spec):
    """Require the improvement to be beyond noise (see gates.evaluation.significance)."""

    test: SignificanceTest = "randomization"
    alpha: float = Field(0.05, gt=0, lt=1)  # one-sided p must be below this
    confidence: float = Field(0.95, gt=0, lt=1)  # of the bootstrap CI whose lower bound must be > 0
    n_resamples: int = Field(10_000, ge=100)
    seed: int = Field(0, ge=0)


class ImprovementCheck(CheckSpec):
    kind: Literal["improvement"]
    metric: str
    min_absolute: float = Field(0.0, ge=0)
    min_relative: float = Field(0.0, ge=0)  # fraction of the baseline value, 0.01 = 1%
    significance: Significance | None = None

    @field_validator("metric")
    @classmethod
    def _metric(cls, key: str) -> str:
        return gate_metric(key)

    @model_validator(mode="after")
    def _correlation_test(self) -> ImprovementCheck:
        if self.metric in CORRELATION_METRICS and self.significance and self.significance.test != "bootstrap":
            raise ValueError(
                f"significance.test {self.significance.test!r} flips the signs of per-query deltas, and "
                f"{self.metric} has none (one correlation over all pairs); set significance.test: bootstrap "
                "(a paired bootstrap over the pairs)"
            )
        return self


def evaluate(check: ImprovementCheck, ctx: CheckContext) -> list[GateRow]:
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
        comparison = _compare(check, ctx, dim)
        over = " over pairs" if check.metric in CORRELATION_METRICS else ""
        rule += f"; {sig.test}{over} p < {sig.alpha:g} and {sig.confidence:.0%} CI low > 0"
        fields.update(sig.model_dump())
        ci = f"{sig.confidence:.0%} CI [{comparison.ci_low:+.4f}, {comparison.ci_high:+.4f}]"
        if comparison.ci_high < 0:
            # The whole interval below 0 is evidence the candidate is worse, not a lack of evidence either way:
            # "not significant" or "includes 0" would read as noise.
            problems.append(
                f"worse beyond noise: {ci} is entirely below 0 (p {comparison.p_value_greater:.4f} for an "
                "improvement)"
            )
        else:
            if comparison.p_value_greater >= sig.alpha:
                problems.append(f"not significant: p {comparison.p_value_greater:.4f} >= alpha {sig.alpha:g}")
            if comparison.ci_low <= 0:
                problems.append(f"{ci} includes 0")
    unit = "pairs" if check.metric in CORRELATION_METRICS else "queries"
    evidence = (
        f"; p {comparison.p_value_greater:.4f}, {comparison.confidence:.0%} CI "
        f"[{comparison.ci_low:+.4f}, {comparison.ci_high:+.4f}] over {comparison.n} {unit}"
        if comparison
        else ""
    )
    # Relative to a baseline <= 0 (a correlation can be negative) a share means nothing: left out.
    share = f" ({relative:+.1%})" if old > 0 else ""
    reason = "; ".join(problems) if problems else f"improves by {delta:+.4f}{share}{evidence}"
    return [
        compared_row(
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


def _compare(check: ImprovementCheck, ctx: CheckContext, dim: int):
    """Per-query paired test for a retrieval metric; paired bootstrap over the scored pairs for a correlation."""
    sig = check.significance
    settings = {"confidence": sig.confidence, "n_resamples": sig.n_resamples, "seed": sig.seed}
    if check.metric in CORRELATION_METRICS:
        new = ctx.candidate.scored_pairs_at(check.backend, dim)
        old = ctx.baseline.scored_pairs_at(check.backend, dim)
        if new.gold != old.gold:
            raise MissingMetricError(
                f"the candidate and the baseline were scored on different pairs ({new.n_pairs} vs "
                f"{old.n_pairs}, or other gold scores); evaluate both on the same STS eval set"
            )
        return compare_correlations(new.cosine, old.cosine, new.gold, metric=check.metric, **settings)
    return compare_paired(
        ctx.candidate.per_query_metric(check.metric, check.backend, dim),
        ctx.baseline.per_query_metric(check.metric, check.backend, dim),
        method=sig.test,
        **settings,
    )
