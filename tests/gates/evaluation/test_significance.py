"""gates.evaluation.significance: null cases, clear wins, noise, exact enumeration, reproducibility, agreement with scipy."""

from __future__ import annotations

import numpy as np
import pytest

from gates.evaluation.significance import SignificanceInputError, compare_paired


def _scores(n: int, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return {f"q{i}": float(v) for i, v in enumerate(rng.uniform(0.2, 0.8, size=n))}


@pytest.mark.parametrize("method", ["randomization", "bootstrap"])
def test_identical_systems_are_not_different(method: str) -> None:
    baseline = _scores(300)
    result = compare_paired(dict(baseline), baseline, method=method)
    assert result.mean_delta == 0.0
    assert result.p_value_greater == 1.0
    assert result.p_value_two_sided == 1.0
    assert (result.ci_low, result.ci_high) == (0.0, 0.0)
    assert not result.is_significant(0.05)


@pytest.mark.parametrize("method", ["randomization", "bootstrap"])
def test_clearly_better_candidate_is_significant(method: str) -> None:
    baseline = _scores(300)
    noise = np.random.default_rng(1).normal(0.0, 0.05, size=300)
    candidate = {q: v + 0.05 + e for (q, v), e in zip(baseline.items(), noise, strict=True)}
    result = compare_paired(candidate, baseline, method=method)
    assert result.mean_delta == pytest.approx(0.05 + noise.mean())
    assert result.p_value_greater < 0.01
    assert 0 < result.ci_low < result.mean_delta < result.ci_high
    assert result.is_significant(0.05)
    worse = compare_paired(baseline, candidate, method=method)
    assert worse.p_value_greater > 0.99  # the one-sided test looks only for "candidate better"
    assert worse.p_value_two_sided < 0.01


def test_a_few_slightly_better_queries_are_noise() -> None:
    baseline = _scores(500)
    candidate = dict(baseline)
    for qid in list(baseline)[:3]:
        candidate[qid] += 0.01
    result = compare_paired(candidate, baseline)
    assert result.mean_delta == pytest.approx(0.03 / 500)
    assert result.p_value_greater > 0.05
    assert result.ci_low <= 0
    assert not result.is_significant(0.05)


def test_small_samples_enumerate_every_sign_assignment() -> None:
    baseline = {f"q{i}": 0.5 for i in range(6)}
    candidate = {**baseline, "q0": 0.6, "q1": 0.6, "q2": 0.6}
    result = compare_paired(candidate, baseline)
    assert result.exact
    # Of 2^6 sign assignments, the mean is >= observed only when q0, q1, q2 all keep their + sign: 8 of 64.
    assert result.p_value_greater == pytest.approx(8 / 64)
    assert result.p_value_two_sided == pytest.approx(2 * 8 / 64)


def test_same_seed_same_result_other_seed_other_draws() -> None:
    baseline = _scores(200)
    candidate = {q: v + np.sin(i) * 0.05 + 0.005 for i, (q, v) in enumerate(baseline.items())}
    first = compare_paired(candidate, baseline, seed=7)
    assert compare_paired(candidate, baseline, seed=7) == first
    other = compare_paired(candidate, baseline, seed=8)
    assert (other.p_value_greater, other.ci_low) != (first.p_value_greater, first.ci_low)
    assert other.p_value_greater == pytest.approx(first.p_value_greater, abs=0.02)
    assert first.to_dict()["seed"] == 7


def test_randomization_agrees_with_scipy_permutation_test() -> None:
    from scipy import stats

    baseline = _scores(400)
    rng = np.random.default_rng(5)
    candidate = {q: v + 0.004 + rng.normal(0, 0.05) for q, v in baseline.items()}
    ours = compare_paired(candidate, baseline, n_resamples=20_000)
    deltas = np.array([candidate[q] - baseline[q] for q in baseline])
    for alternative, ours_p in (("greater", ours.p_value_greater), ("two-sided", ours.p_value_two_sided)):
        scipy_p = stats.permutation_test(
            (deltas,),
            np.mean,
            permutation_type="samples",
            vectorized=True,
            n_resamples=20_000,
            alternative=alternative,
            rng=np.random.default_rng(0),
        ).pvalue
        assert 0.02 < scipy_p < 0.98  # a case where Monte-Carlo error, not the tail, dominates
        assert ours_p == pytest.approx(scipy_p, abs=0.015), alternative


def test_bootstrap_interval_covers_the_normal_approximation() -> None:
    baseline = _scores(1000)
    rng = np.random.default_rng(9)
    candidate = {q: v + rng.normal(0.01, 0.1) for q, v in baseline.items()}
    result = compare_paired(candidate, baseline, confidence=0.9)
    deltas = np.array([candidate[q] - baseline[q] for q in baseline])
    half_width = 1.6449 * deltas.std(ddof=1) / np.sqrt(len(deltas))  # z_0.95 for a two-sided 90% interval
    assert result.ci_low == pytest.approx(deltas.mean() - half_width, abs=0.1 * half_width)
    assert result.ci_high == pytest.approx(deltas.mean() + half_width, abs=0.1 * half_width)


def test_mismatched_query_sets_name_the_missing_ids() -> None:
    baseline = _scores(10)
    candidate = {q: v for q, v in baseline.items() if q not in ("q3", "q7")}
    candidate["extra"] = 0.5
    with pytest.raises(
        SignificanceInputError,
        match=r"2 baseline queries are missing from the candidate \('q3', 'q7'\) and 1 candidate queries "
        r"are missing from the baseline \('extra'\)",
    ):
        compare_paired(candidate, baseline)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "t-test"}, r"unknown test 't-test'; expected one of randomization, bootstrap"),
        ({"confidence": 95}, r"confidence must be between 0 and 1 \(e.g. 0.95\), got 95"),
        ({"n_resamples": 10}, r"n_resamples must be an integer >= 100 .*got 10"),
        ({"seed": -1}, r"seed must be a non-negative integer, got -1"),
    ],
)
def test_bad_settings_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(SignificanceInputError, match=message):
        compare_paired(_scores(5), _scores(5, seed=1), **kwargs)


def test_bad_scores_are_rejected() -> None:
    with pytest.raises(SignificanceInputError, match=r"at least 2 queries, got 1"):
        compare_paired({"q": 0.5}, {"q": 0.4})
    with pytest.raises(SignificanceInputError, match=r"candidate score of query 'q1' is nan"):
        compare_paired({"q0": 0.1, "q1": float("nan")}, {"q0": 0.1, "q1": 0.2})
