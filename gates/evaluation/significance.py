"""Paired significance tests over per-query scores: is the candidate really better than the baseline?

    from gates.evaluation.significance import compare_paired
    result = compare_paired(candidate.metric_per_query("ndcg@10"), baseline.metric_per_query("ndcg@10"))
    result.mean_delta, result.p_value_greater, (result.ci_low, result.ci_high)

Both tests work on the per-query differences d = candidate - baseline of the same queries:
- randomization (sign-flip permutation, Fisher's paired randomization test): under "no difference" each d is
  as likely to be +d as -d; the p-value is the share of sign assignments whose mean is at least the observed
  mean. With 2^n <= n_resamples every assignment is enumerated (exact test).
- bootstrap: resample queries with replacement; the p-value is the share of resampled means of the centred
  differences (d - mean d: the null made true) at least as extreme as the observed mean.
Either way the confidence interval of the mean difference is the percentile bootstrap: simple, never undefined
when many differences are 0 (common in IR, where BCa's acceleration can be NaN), and the usual choice in IR
evaluation (Sakai 2006). Resampling is vectorised and seeded (numpy for sign flips, scipy.stats.bootstrap
for the interval): 1,000 queries with 10,000 resamples take about a tenth of a second.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from numbers import Integral
from typing import TYPE_CHECKING, Any, Literal

from gates.errors import EmbedgateGateError

if TYPE_CHECKING:
    import numpy as np

SignificanceTest = Literal["randomization", "bootstrap"]
TESTS: tuple[str, ...] = ("randomization", "bootstrap")
DEFAULT_RESAMPLES = 10_000
_BATCH_ELEMENTS = 2**22  # resamples x queries held at once (~32 MB of float64), so 100k queries still fit


class SignificanceInputError(EmbedgateGateError):
    """Per-query scores or test settings cannot be used for a paired test."""


@dataclass(frozen=True)
class PairedComparison:
    """Outcome of a paired test of candidate against baseline over `n` queries."""

    method: str  # the test that gave the p-values: "randomization" or "bootstrap"
    n: int
    mean_candidate: float
    mean_baseline: float
    mean_delta: float  # candidate - baseline
    ci_low: float  # percentile-bootstrap confidence interval of mean_delta
    ci_high: float
    confidence: float
    p_value_greater: float  # one-sided: H1 candidate > baseline
    p_value_two_sided: float
    n_resamples: int
    seed: int
    exact: bool  # randomization enumerated every sign assignment instead of sampling

    def is_significant(self, alpha: float) -> bool:
        """Better beyond noise: one-sided p < alpha and the interval lies above 0."""
        return self.p_value_greater < alpha and self.ci_low > 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_paired(
    candidate: Mapping[str, float],
    baseline: Mapping[str, float],
    *,
    method: SignificanceTest = "randomization",
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> PairedComparison:
    """Test whether `candidate` (query id -> score) beats `baseline` on the same queries.

    The p-value is one-sided, from the paired randomization (permutation) test: under the null hypothesis each
    query's two scores are exchangeable, so the sign of each per-query delta is flipped at random (Fisher, 1935;
    recommended for IR by Smucker, Allan & Carterette, "A Comparison of Statistical Significance Tests for
    Information Retrieval Evaluation", CIKM 2007). With few queries every sign pattern is enumerated (exact).
    The confidence interval of the mean delta is a percentile bootstrap over queries (Efron & Tibshirani, 1993).

    Args:
        candidate, baseline: per-query scores (e.g. NDCG@10) keyed by query id; the ids must match.
        method: "randomization" (default) or "bootstrap" (the p-value from the bootstrap distribution instead).
        confidence: of the bootstrap CI, e.g. 0.95.
        n_resamples: permutations and bootstrap resamples.
        seed: makes the result reproducible (one seed, two independent streams).

    Returns:
        A PairedComparison: mean delta, one-sided p-value, CI, number of queries, whether the test was exact.

    Raises:
        SignificanceInputError: mismatched query ids, non-finite scores, or invalid settings (named).
    """
    import numpy as np

    _check_settings(method, confidence, n_resamples, seed)
    n_resamples, seed = int(n_resamples), int(seed)  # numpy integers would not survive json.dumps
    query_ids = _paired_query_ids(candidate, baseline)
    candidate_scores = _as_finite_array("candidate", candidate, query_ids)
    baseline_scores = _as_finite_array("baseline", baseline, query_ids)
    deltas = candidate_scores - baseline_scores
    observed = float(np.mean(deltas))
    # One seed, two independent streams: the CI must not depend on whether the p-value came first.
    permutation_stream, bootstrap_stream = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2)
    )

    boot_means, ci_low, ci_high = _bootstrap(deltas, confidence, n_resamples, bootstrap_stream)
    exact = False
    if method == "randomization":
        null, exact = _sign_flip_null(deltas, n_resamples, permutation_stream)
        centred_null = null
    else:
        centred_null = boot_means - observed
    adjustment = 0 if exact else 1  # a sampled null counts the observed assignment too: p is never 0
    p_greater = _tail_share(centred_null >= observed - _tolerance(observed), adjustment)
    p_less = _tail_share(centred_null <= observed + _tolerance(observed), adjustment)
    return PairedComparison(
        method=method,
        n=len(query_ids),
        mean_candidate=float(np.mean(candidate_scores)),
        mean_baseline=float(np.mean(baseline_scores)),
        mean_delta=observed,
        ci_low=ci_low,
        ci_high=ci_high,
        confidence=confidence,
        p_value_greater=p_greater,
        p_value_two_sided=min(1.0, 2 * min(p_greater, p_less)),
        n_resamples=n_resamples,
        seed=seed,
        exact=exact,
    )


def _sign_flip_null(
    deltas: np.ndarray, n_resamples: int, rng: np.random.Generator
) -> tuple[np.ndarray, bool]:
    """Null distribution of the mean difference under random signs; every assignment when 2^n fits.

    By hand rather than scipy.stats.permutation_test (which gives the same p-values, checked in the tests):
    a sign matrix times the differences is one BLAS product, 0.04 s for 1,000 queries x 10,000 resamples,
    where scipy's generic pair permutation took 0.75 s on this machine."""
    import numpy as np

    n = len(deltas)
    if 2**n <= n_resamples:
        every_assignment = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
        return (every_assignment * 2.0 - 1.0) @ deltas / n, True
    batch = max(1, _BATCH_ELEMENTS // n)
    null = np.empty(n_resamples)
    for start in range(0, n_resamples, batch):
        size = min(batch, n_resamples - start)
        signs = rng.integers(0, 2, size=(size, n), dtype=np.int8) * 2.0 - 1.0
        null[start : start + size] = signs @ deltas / n
    return null, False


def _bootstrap(
    deltas: np.ndarray, confidence: float, n_resamples: int, rng: np.random.Generator
) -> tuple[np.ndarray, float, float]:
    """Resampled means of the differences and their percentile confidence interval."""
    import numpy as np
    from scipy import stats

    if np.ptp(deltas) == 0:  # every resample has the same mean; scipy would warn about degenerate data
        return np.full(n_resamples, deltas[0]), float(deltas[0]), float(deltas[0])
    result = stats.bootstrap(
        (deltas,),
        np.mean,
        n_resamples=n_resamples,
        batch=max(1, _BATCH_ELEMENTS // len(deltas)),
        vectorized=True,
        confidence_level=confidence,
        method="percentile",
        rng=rng,
    )
    interval = result.confidence_interval
    return np.asarray(result.bootstrap_distribution), float(interval.low), float(interval.high)


def _tail_share(in_tail: np.ndarray, adjustment: int) -> float:
    return float((in_tail.sum() + adjustment) / (in_tail.size + adjustment))


def _tolerance(observed: float) -> float:
    # Resampled means that equal the observed one up to float rounding (other summation order) count as
    # "at least as extreme"; otherwise identical systems could get p < 1. Same idea as scipy's own comparison.
    return 1e-12 * max(1.0, abs(observed))


def _paired_query_ids(candidate: Mapping[str, float], baseline: Mapping[str, float]) -> list[str]:
    only_candidate = [q for q in candidate if q not in baseline]
    only_baseline = [q for q in baseline if q not in candidate]
    if only_candidate or only_baseline:
        raise SignificanceInputError(
            "a paired test needs scores for the same queries on both sides; "
            f"{len(only_baseline)} baseline queries are missing from the candidate "
            f"({_first(only_baseline)}) and {len(only_candidate)} candidate queries are missing from the "
            f"baseline ({_first(only_candidate)}). "
            "Evaluate both models on the same qrels and split"
        )
    if len(candidate) < 2:
        raise SignificanceInputError(
            f"a paired test needs at least 2 queries, got {len(candidate)}; evaluate on more queries"
        )
    return list(candidate)


def _as_finite_array(label: str, scores: Mapping[str, float], query_ids: list[str]) -> np.ndarray:
    import numpy as np

    values = np.array([scores[q] for q in query_ids], dtype=np.float64)
    if not np.isfinite(values).all():
        bad = query_ids[int(np.flatnonzero(~np.isfinite(values))[0])]
        raise SignificanceInputError(
            f"{label} score of query {bad!r} is {scores[bad]!r}; expected a finite number per query"
        )
    return values


def _check_settings(method: str, confidence: float, n_resamples: int, seed: int) -> None:
    if method not in TESTS:
        raise SignificanceInputError(f"unknown test {method!r}; expected one of {', '.join(TESTS)}")
    if not 0 < confidence < 1:
        raise SignificanceInputError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence!r}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, Integral) or n_resamples < 100:
        raise SignificanceInputError(
            f"n_resamples must be an integer >= 100 (10,000 is typical), got {n_resamples!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise SignificanceInputError(f"seed must be a non-negative integer, got {seed!r}")


def _first(ids: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in ids[:limit])
    return (shown + (", ..." if len(ids) > limit else "")) if ids else "none"
