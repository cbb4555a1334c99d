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
from dataclasses import dataclass, field
from typing import Any

from gates.errors import MissingMetricError
from gates.evaluation.results import CORRELATION_METRICS, EvalResults, EvalResultsError, ParityRecord
from gates.quality_gate.check_base import CheckContext, GateRow
from gates.quality_gate.checks import EVALUATORS
from gates.quality_gate.policy import GatePolicy


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
    # the champion the candidate was compared against (None: the base model) and its Registry.fingerprint
    baseline_version: str | None = None
    baseline_fingerprint: str | None = None

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
            "baseline_version": self.baseline_version,
            "baseline_fingerprint": self.baseline_fingerprint,
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
    context = CheckContext(policy, candidate, baseline, parity, serving_dim)
    rows: list[GateRow] = []
    for check in policy.checks:
        try:
            rows.extend(EVALUATORS[check.kind](check, context))
        except MissingMetricError as err:
            raise MissingMetricError(f"check {check.name!r} ({check.kind}): {err}") from None
    return GateDecision(
        rows=tuple(rows),
        serving_dim=serving_dim,
        serving_dim_reason=serving_reason,
        policy=policy,
        candidate=candidate.model.name,
        baseline=baseline.model.name,
        baseline_version=baseline.model.registry_version,
        baseline_fingerprint=baseline.model.version_fingerprint,
    )


def resolve_serving_dim(policy: GatePolicy, candidate: EvalResults) -> tuple[int, str]:
    """The dim to serve, and why: fixed by the policy, or the smallest dim whose primary metric (candidate,
    onnx-fp32) keeps `serving_dim_fraction` of the largest dim's, and is non-inferior beyond query-sampling noise:
    the lower end of the bootstrap interval of mean(dim - (fraction - margin) * full) over queries (over pairs for a correlation) must be >= 0,
    else the next dim up (the full dim is the conservative choice).

    Why a margin: with margin 0 the bound itself must reach the fraction, so on 100 test queries a dim that kept
    100.1% of the full dim was refused (its interval is a few points wide) and a larger one served. Non-inferiority
    asks what the data can rule out: the point estimate must keep the target share, and the data must exclude a
    loss larger than fraction - margin (97% by default)."""
    dims = candidate.dims("onnx-fp32")
    if not dims:
        raise MissingMetricError(
            f"the serving dim is chosen on the candidate's onnx-fp32 results, and there are none; available: "
            f"{candidate.available()}"
        )
    if policy.serving_dim != "auto":
        # raises, listing the evaluated dims, if the fixed dim was not evaluated
        candidate.mean_metric(policy.primary_metric, "onnx-fp32", policy.serving_dim)
        return policy.serving_dim, "fixed by the policy"
    metric, full_dim = policy.primary_metric, dims[-1]
    full = candidate.mean_metric(metric, "onnx-fp32", full_dim)
    bound = policy.serving_dim_fraction - policy.serving_dim_margin
    within_noise = []
    for dim in dims:
        value = candidate.mean_metric(metric, "onnx-fp32", dim)
        # The full dim always qualifies: a correlation can be negative, and then value < fraction * value.
        if dim == full_dim or value >= policy.serving_dim_fraction * full:
            low = _retention_lower_bound(candidate, metric, dim, full_dim, bound)
            kept = value / full if full > 0 else 1.0
            if low < 0:
                within_noise.append(f"d{dim} {kept:.1%}")
                continue
            noise = (
                f"; {', '.join(within_noise)} kept it, but a loss below {bound:.0%} was within noise"
                if within_noise
                else ""
            )
            return dim, (
                f"auto: smallest dim keeping >= {policy.serving_dim_fraction:.0%} of d{full_dim}'s {metric} "
                f"with its 95% lower bound over {'pairs' if metric in CORRELATION_METRICS else 'queries'} >= "
                f"{bound:.0%}: {value:.4f} = {kept:.1%} of {full:.4f}{noise}"
            )
    raise AssertionError("unreachable: the full dim always qualifies")


def _retention_lower_bound(
    candidate: EvalResults, metric: str, dim: int, full_dim: int, fraction: float
) -> float:
    """Lower end of the 95% bootstrap interval of mean over queries of (dim - fraction * full); >= 0 at full dim.
    A correlation (STS eval set): of corr(dim) - fraction * corr(full), bootstrapped over the pairs."""
    if dim == full_dim:
        return 0.0
    from gates.evaluation.significance import compare_correlations, compare_paired

    if metric in CORRELATION_METRICS:
        small_pairs = candidate.scored_pairs_at("onnx-fp32", dim)
        full_pairs = candidate.scored_pairs_at("onnx-fp32", full_dim)
        return compare_correlations(
            small_pairs.cosine,
            full_pairs.cosine,
            small_pairs.gold,
            metric=metric,
            baseline_weight=fraction,
            n_resamples=2000,
        ).ci_low

    small = candidate.per_query_metric(metric, "onnx-fp32", dim)
    full = candidate.per_query_metric(metric, "onnx-fp32", full_dim)
    return compare_paired(
        small, {q: fraction * v for q, v in full.items()}, method="bootstrap", n_resamples=2000
    ).ci_low
