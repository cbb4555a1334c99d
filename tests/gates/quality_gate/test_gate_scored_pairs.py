"""Gating on an STS eval set: Spearman of cosine vs gold, compared by a paired bootstrap over the pairs, with the
packaged scored-pairs policy (improvement + no regression, serving dim chosen on Spearman)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from gates.errors import MissingMetricError
from gates.evaluation.results import EvalResults, EvalResultsError, ParityRecord
from gates.evaluation.significance import SignificanceInputError, compare_correlations
from gates.quality_gate.decision import decide
from gates.quality_gate.policy import PolicyError, default_policy, policy_from_dict

DIMS = (16, 32)
N_PAIRS = 120
PARITY = ParityRecord.from_export_json(
    {
        "graphs": [
            {"path": f"d{d}/model.onnx", "dim": d, "precision": "fp32", "parity": {"min_cosine": 0.999999}}
            for d in DIMS
        ]
    }
)


def _gold() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 5, N_PAIRS).round(1)


def _cosines(gold: np.ndarray, signal: float, seed: int) -> np.ndarray:
    """Cosines that follow the gold scores with `signal` (0: none) plus noise."""
    rng = np.random.default_rng(seed)
    return np.clip(signal * gold / 5 + rng.normal(0, 0.3, len(gold)), -1, 1)


def _results(label: str, cosine: np.ndarray, gold: np.ndarray) -> EvalResults:
    entries = []
    for backend in ("onnx-fp32", "onnx-int8"):
        for dim in DIMS:
            entries.append(
                {
                    "backend": backend,
                    "dim": dim,
                    "spearman": float(stats.spearmanr(cosine, gold).statistic),
                    "pearson": float(stats.pearsonr(cosine, gold).statistic),
                    "n_pairs": len(gold),
                    "cosine": cosine.tolist(),
                    "gold": gold.tolist(),
                }
            )
    return EvalResults.from_dict({"model": {"label": label, "name": label}, "scored_pairs": entries})


def test_the_bootstrap_over_pairs_tells_a_better_model_from_an_equal_one():
    gold = _gold()
    good, noise = _cosines(gold, 1.0, 1), _cosines(gold, 0.0, 2)
    better = compare_correlations(good, noise, gold, n_resamples=2000)
    assert better.method == "bootstrap" and better.n == N_PAIRS
    assert better.mean_candidate == pytest.approx(stats.spearmanr(good, gold).statistic)
    assert better.is_significant(0.05) and better.ci_low > 0
    same = compare_correlations(good, good, gold, n_resamples=2000)
    assert same.mean_delta == 0 and not same.is_significant(0.05)
    worse = compare_correlations(noise, good, gold, metric="pearson", n_resamples=2000)
    assert worse.p_value_greater > 0.5 and worse.ci_high < 0


def test_pairs_of_other_lengths_are_refused():
    gold = _gold()
    with pytest.raises(SignificanceInputError, match="one gold score per pair"):
        compare_correlations(gold[:-1], gold, gold)
    with pytest.raises(SignificanceInputError, match="unknown correlation 'kendall'"):
        compare_correlations(gold, gold, gold, metric="kendall")


def test_scored_pairs_policy_passes_a_better_candidate_and_blocks_a_shuffled_one():
    gold = _gold()
    baseline = _results("baseline", _cosines(gold, 0.3, 3), gold)
    decision = decide(
        default_policy(scored_pairs=True),
        _results("candidate", _cosines(gold, 1.0, 4), gold),
        baseline,
        PARITY,
    )
    assert decision.passed, decision.table()
    row = next(r for r in decision.rows if r.check == "spearman_improves")
    assert row.metric == "spearman" and row.p_value < 0.05 and row.ci_low > 0
    assert f"over {N_PAIRS} pairs" in row.reason and "bootstrap over pairs" in row.threshold
    assert "lower bound over pairs" in decision.serving_dim_reason
    # A model trained on shuffled scores: its cosines follow nothing.
    shuffled = _results("candidate", _cosines(gold, 0.0, 5), gold)
    blocked = decide(default_policy(scored_pairs=True), shuffled, baseline, PARITY)
    assert not blocked.passed
    assert {r.check for r in blocked.failures} >= {"spearman_improves"}


def test_candidate_and_baseline_on_other_pairs_is_an_error():
    gold = _gold()
    other = gold.copy()
    other[0] += 1
    with pytest.raises(MissingMetricError, match="scored on different pairs"):
        decide(
            default_policy(scored_pairs=True),
            _results("candidate", _cosines(gold, 1.0, 4), gold),
            _results("baseline", _cosines(other, 0.3, 3), other),
            PARITY,
        )


def test_a_correlation_with_the_randomization_test_is_refused_naming_the_fix():
    check = {"name": "s", "kind": "improvement", "metric": "spearman", "significance": {"alpha": 0.05}}
    with pytest.raises(PolicyError, match="set significance.test: bootstrap"):
        policy_from_dict({"primary_metric": "spearman", "checks": [check]})
    with pytest.raises(
        PolicyError, match="or, for an STS eval set \\(scored pairs\\), one of spearman, pearson"
    ):
        policy_from_dict({"checks": [{**check, "metric": "kendall"}]})


def test_results_with_neither_retrieval_nor_scored_pairs_are_refused():
    with pytest.raises(EvalResultsError, match="expected retrieval results .* or scored_pairs results"):
        EvalResults.from_dict({"model": {"label": "candidate", "name": "c"}})


def test_a_retrieval_metric_on_scored_pairs_results_names_what_exists():
    gold = _gold()
    results = _results("candidate", _cosines(gold, 1.0, 4), gold)
    with pytest.raises(
        MissingMetricError, match=r"available: onnx-fp32 d16, d32; .*metrics: spearman, pearson"
    ):
        results.mean_metric("ndcg@10", "onnx-fp32", 16)


def test_a_scored_pairs_entry_needs_one_cosine_and_gold_score_per_pair():
    gold = _gold()
    entry = {"backend": "onnx-fp32", "dim": 16, "spearman": 0.5, "pearson": 0.5, "n_pairs": N_PAIRS}
    with pytest.raises(
        EvalResultsError, match=rf"one cosine and one gold score per pair \({N_PAIRS}\), got 3"
    ):
        EvalResults.from_dict(
            {
                "model": {"label": "candidate", "name": "c"},
                "scored_pairs": [{**entry, "cosine": [0.1, 0.2, 0.3], "gold": gold.tolist()}],
            }
        )


def test_an_eval_table_that_is_not_scored_pairs_is_refused(tmp_path):
    from gates.errors import RunDirectoryError
    from gates.evaluation.evaluate import load_eval_set
    from tests import synthetic

    pairs = synthetic.write_csv(tmp_path / "pairs.csv", ["anchor", "positive"], synthetic.make_pairs(20))
    with pytest.raises(
        RunDirectoryError, match=r"expected a BEIR folder \(retrieval\) or an STS table .* got a pairs"
    ):
        load_eval_set(pairs)
    sts = synthetic.write_csv(
        tmp_path / "sts.csv",
        ["sentence1", "sentence2", "score"],
        [(f"a {i}", f"b {i}", i % 5) for i in range(12)],
    )
    view, loaded = load_eval_set(sts)
    assert view is None and loaded.scores[:3] == [0.0, 1.0, 2.0] and len(loaded.sentences1) == 12
