"""gates.quality_gate.policy: the default policy, every check kind passing and failing, serving-dim choice, missing evidence,
and policy files that do not validate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gates.errors import MissingMetricError
from gates.evaluation.results import EvalResults, EvalResultsError, ParityRecord
from gates.quality_gate.decision import decide, resolve_serving_dim
from gates.quality_gate.policy import GatePolicy, PolicyError, default_policy, load_policy, policy_from_dict

DIMS = (64, 128, 256, 384)
METRICS = ("ndcg@10", "mrr@10", "recall@10", "map@100")
N_QUERIES = 200
# Share of the full dim's quality each dim keeps: d256 is the smallest within 99%.
DIM_QUALITY = {64: 0.90, 128: 0.985, 256: 0.995, 384: 1.0}


def _baseline_per_query(seed: int = 0) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(seed)
    return {f"q{i}": {m: float(rng.uniform(0.2, 0.7)) for m in METRICS} for i in range(N_QUERIES)}


def _results(
    label: str,
    per_query: dict[str, dict[str, float]],
    int8_share: float = 0.995,
    sts: float | None = None,
) -> EvalResults:
    """Results at every dim for onnx-fp32 and onnx-int8, scaled by DIM_QUALITY (and int8_share for int8)."""
    retrieval = []
    for backend, share in (("onnx-fp32", 1.0), ("onnx-int8", int8_share)):
        for dim in DIMS:
            scaled = {
                q: {m: v * DIM_QUALITY[dim] * share for m, v in values.items()}
                for q, values in per_query.items()
            }
            mean = {m: float(np.mean([values[m] for values in scaled.values()])) for m in METRICS}
            retrieval.append(
                {"backend": backend, "dim": dim, "n_queries": N_QUERIES, "mean": mean, "per_query": scaled}
            )
    sts_entries = (
        [
            {"backend": "onnx-fp32", "dim": dim, "spearman": sts, "pearson": sts, "n_pairs": 100}
            for dim in DIMS
        ]
        if sts is not None
        else []
    )
    return EvalResults.from_dict(
        {"model": {"label": label, "name": f"{label}-model"}, "retrieval": retrieval, "sts": sts_entries}
    )


def _shifted(per_query: dict[str, dict[str, float]], shift: dict[str, float], noise_seed: int = 1) -> dict:
    """Every query moved by `shift[metric]` plus small noise: a consistent, significant change."""
    rng = np.random.default_rng(noise_seed)
    return {
        q: {m: v + shift.get(m, 0.0) + rng.normal(0, 0.01) for m, v in values.items()}
        for q, values in per_query.items()
    }


GOOD_PARITY = ParityRecord.from_export_json(
    {
        "graphs": [
            {"path": f"d{d}/model.onnx", "dim": d, "precision": "fp32", "parity": {"min_cosine": 0.999999}}
            for d in DIMS
        ]
    }
)


@pytest.fixture(scope="module")
def baseline_per_query() -> dict[str, dict[str, float]]:
    return _baseline_per_query()


@pytest.fixture(scope="module")
def baseline(baseline_per_query) -> EvalResults:
    return _results("baseline", baseline_per_query)


@pytest.fixture(scope="module")
def better(baseline_per_query) -> EvalResults:
    return _results("candidate", _shifted(baseline_per_query, {m: 0.05 for m in METRICS}))


def test_clearly_better_candidate_passes_every_check(better, baseline) -> None:
    decision = decide(default_policy(), better, baseline, parity=GOOD_PARITY)
    assert decision.passed
    assert decision.serving_dim == 256
    by_check = {}
    for row in decision.rows:
        by_check.setdefault(row.check, []).append(row)
    assert [r.metric for r in by_check["no_regression_core"]] == ["mrr@10", "recall@10"]
    assert [r.dim for r in by_check["onnx_fp32_parity"]] == list(DIMS)
    primary = by_check["primary_improves"][0]
    assert (primary.status, primary.dim, primary.backend) == ("pass", 256, "onnx-fp32")
    assert primary.delta == pytest.approx(primary.candidate - primary.baseline)
    assert primary.delta > 0.04
    assert primary.p_value < 0.001 and primary.ci_low > 0
    assert by_check["general_domain_sts"][0].status == "skip"  # no STS results: recorded, not a silent pass
    assert "no general-domain STS results" in by_check["general_domain_sts"][0].reason


def test_no_improvement_fails(baseline_per_query, baseline) -> None:
    same = _results("candidate", baseline_per_query)
    decision = decide(default_policy(), same, baseline, parity=GOOD_PARITY)
    assert not decision.passed
    [failure] = decision.failures
    assert failure.check == "primary_improves"
    assert "no improvement: delta +0.0000" in failure.reason


def test_improvement_within_noise_fails(baseline_per_query, baseline) -> None:
    # Identical but for three queries, each 0.5 better: the mean clears min_absolute (0.0075 >= 0.005 at full
    # dim) yet three lucky queries out of 200 are not evidence.
    lucky = {q: dict(v) for q, v in baseline_per_query.items()}
    for qid in ("q0", "q1", "q2"):
        lucky[qid]["ndcg@10"] += 0.5
    decision = decide(default_policy(), _results("candidate", lucky), baseline, parity=GOOD_PARITY)
    primary = decision.rows[0]
    assert primary.delta >= 0.005
    assert primary.status == "fail"
    assert primary.p_value > 0.05
    assert "not significant" in primary.reason
    assert not decision.passed


def test_a_candidate_worse_beyond_noise_is_said_to_be_worse(baseline_per_query, baseline) -> None:
    # Issue 31 item 5: a run trained on permuted labels was blocked with "95% CI [-0.4976, -0.3499] includes 0".
    # An interval entirely below 0 is evidence of a loss, not a lack of evidence.
    worse = _results("candidate", _shifted(baseline_per_query, {m: -0.1 for m in METRICS}))
    primary = decide(default_policy(), worse, baseline, parity=GOOD_PARITY).rows[0]
    assert primary.status == "fail"
    assert primary.ci_high < 0
    ci = f"95% CI [{primary.ci_low:+.4f}, {primary.ci_high:+.4f}]"
    assert primary.reason == (
        f"no improvement: delta {primary.delta:+.4f}; worse beyond noise: {ci} is entirely below 0 "
        f"(p {primary.p_value:.4f} for an improvement)"
    )


def test_an_interval_straddling_0_is_said_to_include_it(baseline_per_query, baseline) -> None:
    # Half the queries 0.02 better, half 0.02 worse: a mean of about 0, an interval on both sides.
    mixed = {q: dict(v) for q, v in baseline_per_query.items()}
    for i, qid in enumerate(mixed):
        mixed[qid]["ndcg@10"] += 0.02 if i % 2 else -0.02
    primary = decide(default_policy(), _results("candidate", mixed), baseline, parity=GOOD_PARITY).rows[0]
    assert primary.ci_low < 0 < primary.ci_high
    assert primary.reason.endswith(f"95% CI [{primary.ci_low:+.4f}, {primary.ci_high:+.4f}] includes 0")
    assert "worse" not in primary.reason


def test_significance_is_what_fails_when_margins_are_zero(baseline_per_query, baseline) -> None:
    # Four of 200 queries 0.01 better, the rest identical. Every difference is >= 0, so the percentile bootstrap
    # interval sits just above 0; the randomization test is what sees four queries as too few.
    data = default_policy().model_dump()
    data["checks"][0]["min_absolute"] = 0.0
    slightly = {q: dict(v) for q, v in baseline_per_query.items()}
    for qid in ("q5", "q6", "q7", "q8"):
        slightly[qid]["ndcg@10"] += 0.01
    decision = decide(policy_from_dict(data), _results("candidate", slightly), baseline, parity=GOOD_PARITY)
    primary = decision.rows[0]
    assert 0 < primary.delta < 0.001
    assert primary.status == "fail"
    assert primary.p_value > 0.05 and primary.ci_low > 0
    assert primary.reason == f"not significant: p {primary.p_value:.4f} >= alpha 0.05"


def test_parity_failure_blocks(better, baseline) -> None:
    graphs = [g.model_dump() for g in GOOD_PARITY.graphs]
    graphs[1]["min_cosine"] = 0.9990
    decision = decide(default_policy(), better, baseline, parity=ParityRecord(graphs=graphs))
    assert not decision.passed
    [failure] = decision.failures
    assert (failure.check, failure.dim, failure.candidate) == ("onnx_fp32_parity", 128, 0.9990)
    assert "0.999000 (d128/model.onnx) < 0.9999" in failure.reason
    [table_line] = [line for line in decision.table().splitlines() if line.startswith("FAIL")]
    assert "   128 onnx-fp32  0.999000" in table_line  # parity is shown to 6 digits, not rounded to 0.9990


def test_warning_failures_do_not_block_unless_int8_ships(baseline_per_query, baseline) -> None:
    # map@100 drops by 0.05 (warning check); int8 keeps only 95% (retention: warning while fp32 ships).
    shifted = _shifted(
        baseline_per_query, {"ndcg@10": 0.05, "mrr@10": 0.05, "recall@10": 0.05, "map@100": -0.05}
    )
    candidate = _results("candidate", shifted, int8_share=0.95)
    decision = decide(default_policy(), candidate, baseline, parity=GOOD_PARITY)
    assert decision.passed
    assert sorted(row.check for row in decision.warnings) == ["int8_retention", "no_regression_deep"]
    retention = next(row for row in decision.rows if row.check == "int8_retention")
    assert retention.candidate == pytest.approx(0.95 * retention.baseline)

    int8_policy = policy_from_dict({**default_policy().model_dump(), "serve_precision": "int8"})
    shipped = decide(int8_policy, candidate, baseline, parity=GOOD_PARITY)
    assert not shipped.passed
    assert [(row.check, row.severity) for row in shipped.failures] == [("int8_retention", "critical")]


def test_general_domain_check_applies_when_sts_exists(baseline_per_query) -> None:
    shifted = _shifted(baseline_per_query, {m: 0.05 for m in METRICS})
    candidate = _results("candidate", shifted, sts=0.75)
    baseline = _results("baseline", baseline_per_query, sts=0.80)
    decision = decide(default_policy(), candidate, baseline, parity=GOOD_PARITY)
    sts_rows = [row for row in decision.rows if row.check == "general_domain_sts"]
    assert [row.dim for row in sts_rows] == sorted(DIMS, reverse=True)  # every dim a client can ask for
    assert all((row.status, row.severity) == ("fail", "warning") for row in sts_rows)
    assert sts_rows[0].delta == pytest.approx(-0.05)
    assert decision.passed  # a warning


def test_forgetting_is_checked_at_every_dim_so_a_small_dim_that_forgets_is_flagged(
    baseline_per_query,
) -> None:
    """Issue 30: the full dim holds on the general domain while the smallest forgets; a check at the serving dim
    alone missed it. `tolerance_per_dim` gives a dim its own threshold."""
    candidate = _results("candidate", _shifted(baseline_per_query, {m: 0.05 for m in METRICS}), sts=0.80)
    smallest = min(DIMS)
    raw_sts = [e.model_dump() for e in candidate.sts]
    for entry in raw_sts:
        if entry["dim"] == smallest:
            entry.update(spearman=0.70, pearson=0.70)
    candidate = EvalResults.from_dict({**candidate.to_dict(), "sts": raw_sts})
    baseline = _results("baseline", baseline_per_query, sts=0.80)
    rows = {r.dim: r for r in decide(default_policy(), candidate, baseline, parity=GOOD_PARITY).rows
            if r.check == "general_domain_sts"}  # fmt: skip
    assert rows[smallest].status == "fail" and f"at {smallest}d" in rows[smallest].reason
    assert all(row.status == "pass" for dim, row in rows.items() if dim != smallest)
    raw = default_policy().model_dump()
    for check in raw["checks"]:
        if check["kind"] == "general_domain":
            check["tolerance_per_dim"] = {smallest: 0.15}
    relaxed = decide(policy_from_dict(raw), candidate, baseline, parity=GOOD_PARITY)
    assert (
        next(r for r in relaxed.rows if r.check == "general_domain_sts" and r.dim == smallest).status
        == "pass"
    )


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [(0.99, 256), (0.98, 128), (0.5, 64), (1.0, 384)],
)
def test_auto_serving_dim_is_the_smallest_within_the_fraction(better, baseline, fraction, expected) -> None:
    policy = policy_from_dict({**default_policy().model_dump(), "serving_dim_fraction": fraction})
    decision = decide(policy, better, baseline, parity=GOOD_PARITY)
    assert decision.serving_dim == expected
    assert decision.rows[0].dim == expected


def test_fixed_serving_dim_must_have_been_evaluated(better, baseline) -> None:
    policy = policy_from_dict({**default_policy().model_dump(), "serving_dim": 128})
    assert decide(policy, better, baseline, parity=GOOD_PARITY).serving_dim == 128
    missing = policy_from_dict({**default_policy().model_dump(), "serving_dim": 512})
    with pytest.raises(
        MissingMetricError, match=r"not evaluated at onnx-fp32 d512; available: onnx-fp32 d64, d128"
    ):
        decide(missing, better, baseline, parity=GOOD_PARITY)


def _one_check_policy(**check) -> GatePolicy:
    return policy_from_dict({"checks": [{"name": "only", "severity": "critical", **check}]})


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (
            {"kind": "improvement", "metric": "ndcg@5"},
            r"check 'only' \(improvement\): .*has no ndcg@5 at "
            r"onnx-fp32 d256; available there: ndcg@10, mrr@10, recall@10, map@100",
        ),
        (
            {"kind": "no_regression", "metric": "mrr@10", "dim": 512},
            r"not evaluated at onnx-fp32 d512; "
            r"available: onnx-fp32 d64, d128, d256, d384; onnx-int8 d64, d128, d256, d384",
        ),
        ({"kind": "no_regression", "metric": "mrr@10", "backend": "torch"}, r"not evaluated at torch d256"),
        ({"kind": "parity", "dim": 100}, r"parity record has no onnx-fp32 d100 graph; it has onnx-fp32 d64"),
        ({"kind": "parity", "backend": "onnx-int8"}, r"parity record has no onnx-int8 graph"),
    ],
)
def test_missing_evidence_raises_listing_what_exists(better, baseline, check, message) -> None:
    with pytest.raises(MissingMetricError, match=message):
        decide(_one_check_policy(**check), better, baseline, parity=GOOD_PARITY)


def test_parity_check_without_a_parity_record_raises(better, baseline) -> None:
    with pytest.raises(MissingMetricError, match=r"onnx_fp32_parity.*needs the export's parity record"):
        decide(default_policy(), better, baseline)


def test_significance_needs_per_query_scores(better, baseline) -> None:
    data = baseline.to_dict()
    for entry in data["retrieval"]:
        entry["per_query"] = {}
    means_only = EvalResults.from_dict(data)
    with pytest.raises(MissingMetricError, match=r"baseline \(baseline-model\) has no per-query scores"):
        decide(default_policy(), better, means_only, parity=GOOD_PARITY)


def test_swapped_arguments_are_caught(better, baseline) -> None:
    with pytest.raises(EvalResultsError, match=r"candidate argument holds results labelled 'baseline'"):
        decide(default_policy(), baseline, better, parity=GOOD_PARITY)


def test_decision_serialises_and_renders(better, baseline) -> None:
    decision = decide(default_policy(), better, baseline, parity=GOOD_PARITY)
    data = json.loads(decision.to_json())
    assert data["passed"] is True and data["serving_dim"] == 256
    assert data["checks"][0]["threshold_fields"]["min_absolute"] == 0.005
    assert data["checks"][-1]["passed"] is None  # skipped
    assert data["policy"]["name"] == "default"
    table = decision.table().splitlines()
    assert table[0].startswith("gate PASSED: candidate-model vs baseline-model")
    assert len([line for line in table if line.startswith(("PASS", "FAIL", "SKIP"))]) == len(decision.rows)
    with pytest.raises(AttributeError):
        decision.passed = False  # type: ignore[misc]


def test_default_policy_matches_the_documented_rules() -> None:
    policy = default_policy()
    checks = {check.name: check for check in policy.checks}
    assert (policy.primary_metric, policy.serving_dim, policy.serve_precision) == ("ndcg@10", "auto", "fp32")
    improvement = checks["primary_improves"]
    assert (improvement.min_absolute, improvement.significance.test, improvement.significance.alpha) == (
        0.005,
        "randomization",
        0.05,
    )
    assert checks["no_regression_core"].metric == ("mrr@10", "recall@10")
    assert checks["no_regression_deep"].severity == "warning"
    assert checks["onnx_fp32_parity"].threshold == 0.9999
    assert (checks["int8_retention"].fraction, checks["int8_retention"].severity) == (0.99, "auto")
    assert (checks["general_domain_sts"].tolerance, checks["general_domain_sts"].severity) == (
        0.02,
        "warning",
    )


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


POLICY_HEAD = "primary_metric: ndcg@10\nchecks:\n  - {name: ok, kind: improvement, metric: ndcg@10}\n"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "  - {name: drop, kind: no_regression, metric: mrr@10, tolerance: -0.1}\n",
            r"checks\[1\] is 'drop'\):\n  checks\[1\]\.no_regression\.tolerance: Input should be greater than or "
            r"equal to 0 \(got -0.1\)",
        ),
        (
            "  - {name: typo, kind: improvment, metric: ndcg@10}\n",
            r"checks\[1\]: Input tag 'improvment' found using 'kind' does not match any of the expected tags",
        ),
        (
            "  - {name: upper, kind: no_regression, metric: [NDCG@10]}\n",
            r"checks\[1\]\.no_regression\.metric: expected a metric key .* got 'NDCG@10'; use lowercase 'ndcg@10'",
        ),
        (
            "  - {name: extra, kind: no_regression, metric: mrr@10, tolerence: 0.01}\n",
            r"checks\[1\]\.no_regression\.tolerence: Extra inputs are not permitted \(got 0.01\)",
        ),
        (
            "  - {name: ok, kind: no_regression, metric: mrr@10}\n",
            r"check names must be unique; repeated: ok",
        ),
        (
            "  - {name: sev, kind: parity, severity: blocker}\n",
            r"checks\[1\]\.parity\.severity: Input should be 'critical' or 'warning' \(got 'blocker'\)",
        ),
        ("  - {name: dims, kind: retention, dim: 0}\n", r"dim must be a positive int or 'serving', got 0"),
        (
            "  - {name: sig, kind: improvement, metric: ndcg@10, significance: {test: ttest}}\n",
            r"significance\.test: Input should be 'randomization' or 'bootstrap' \(got 'ttest'\)",
        ),
    ],
)
def test_invalid_policy_files_name_the_field_and_value(tmp_path, body, message) -> None:
    path = _write(tmp_path, POLICY_HEAD + body)
    with pytest.raises(PolicyError, match=message) as caught:
        load_policy(path)
    assert str(caught.value).startswith(f"{path}: invalid gate policy")


def test_policy_file_problems_outside_the_schema(tmp_path) -> None:
    with pytest.raises(PolicyError, match=r"line 3, column \d+: not valid YAML"):
        load_policy(_write(tmp_path, "checks:\n  - name: a\n   kind: parity\n"))
    with pytest.raises(
        PolicyError, match=r"expected a mapping with primary_metric, serving_dim and checks, got list"
    ):
        load_policy(_write(tmp_path, "- a\n- b\n"))
    with pytest.raises(
        PolicyError, match=r"checks: Tuple should have at least 1 item after validation, not 0 \(got \[\]\)"
    ):
        load_policy(_write(tmp_path, "checks: []\n"))
    with pytest.raises(PolicyError, match=r"missing\.yaml: cannot read the gate policy"):
        load_policy(tmp_path / "missing.yaml")
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(PolicyError, match=r"latin1\.yaml: not UTF-8 text \(byte 9\)"):
        load_policy(tmp_path / "latin1.yaml")
    with pytest.raises(
        PolicyError, match=r"serving_dim_fraction: Input should be less than or equal to 1 \(got 1.5\)"
    ):
        policy_from_dict({"serving_dim_fraction": 1.5, "checks": [{"name": "p", "kind": "parity"}]})


def test_auto_serving_dim_needs_its_retention_beyond_query_noise() -> None:
    """d128 keeps 99.3% of d384 on average, but query by query it swings by +-0.15 over 40 queries: within noise,
    so the next dim up is served; with the same mean and no swing, d128 is served."""
    rng = np.random.default_rng(3)
    full = {f"q{i}": float(v) for i, v in enumerate(rng.uniform(0.4, 0.8, 40))}
    swing = rng.normal(0, 0.15, 40)
    swing -= swing.mean()

    def results(per_dim: dict[int, dict[str, float]]) -> EvalResults:
        retrieval = [
            {
                "backend": "onnx-fp32",
                "dim": dim,
                "n_queries": 40,
                "mean": {"ndcg@10": float(np.mean(list(values.values())))},
                "per_query": {q: {"ndcg@10": v} for q, v in values.items()},
            }
            for dim, values in per_dim.items()
        ]
        return EvalResults.from_dict({"model": {"label": "candidate", "name": "c"}, "retrieval": retrieval})

    steady = {q: 0.993 * v for q, v in full.items()}
    noisy = {q: 0.993 * v + s for (q, v), s in zip(full.items(), swing, strict=True)}
    d256 = {q: 0.999 * v for q, v in full.items()}
    low = {q: 0.5 * v for q, v in full.items()}
    policy = default_policy()
    dim, reason = resolve_serving_dim(policy, results({64: low, 128: steady, 256: d256, 384: full}))
    assert dim == 128 and "with its 95% lower bound over queries >= 97%" in reason
    dim, reason = resolve_serving_dim(policy, results({64: low, 128: noisy, 256: d256, 384: full}))
    assert dim == 256 and "d128 99.3% kept it, but a loss below 97% was within noise" in reason


def _swinging_results(share: float, sd: float, n: int = 100, seed: int = 5) -> EvalResults:
    """d128 keeps `share` of d384 on average, swinging by `sd` query by query; d64 keeps half, d256 all of it."""
    rng = np.random.default_rng(seed)
    full = rng.uniform(0.4, 0.8, n)
    swing = rng.normal(0, sd, n)
    swing -= swing.mean()
    per_dim = {64: 0.5 * full, 128: share * full + swing, 256: full, 384: full}
    retrieval = [
        {
            "backend": "onnx-fp32",
            "dim": dim,
            "n_queries": n,
            "mean": {"ndcg@10": float(values.mean())},
            "per_query": {f"q{i}": {"ndcg@10": float(v)} for i, v in enumerate(values)},
        }
        for dim, values in per_dim.items()
    ]
    return EvalResults.from_dict({"model": {"label": "candidate", "name": "c"}, "retrieval": retrieval})


def test_the_non_inferiority_margin_serves_a_dim_that_keeps_the_full_dims_quality_within_noise() -> None:
    """d128 keeps 100.1% of d384 over 100 queries that swing by +-0.06: the data rule out a loss beyond 3% but not
    beyond 1%. With the default margin (bound >= 97%) d128 is served; with margin 0 (the bound must reach 99%,
    the rule before the margin) d256 is."""
    candidate = _swinging_results(1.001, 0.06)
    assert resolve_serving_dim(default_policy(), candidate)[0] == 128
    strict = policy_from_dict({**default_policy().model_dump(), "serving_dim_margin": 0.0})
    dim, reason = resolve_serving_dim(strict, candidate)
    assert dim == 256 and "d128 100.1% kept it, but a loss below 99% was within noise" in reason


def test_the_margin_does_not_serve_a_dim_whose_point_estimate_misses_the_fraction() -> None:
    """A steady d128 at 98.5% is inside any margin's bound, but its share is below the 99% target: d256."""
    candidate = _swinging_results(0.985, 0.0)
    wide = policy_from_dict({**default_policy().model_dump(), "serving_dim_margin": 0.5})
    assert resolve_serving_dim(wide, candidate)[0] == 256


def test_a_margin_at_or_above_the_fraction_is_refused() -> None:
    with pytest.raises(PolicyError, match=r"serving_dim_margin \(0\.99\) must be below serving_dim_fraction"):
        policy_from_dict({**default_policy().model_dump(), "serving_dim_margin": 0.99})
    with pytest.raises(PolicyError, match=r"serving_dim_margin: Input should be greater than or equal to 0"):
        policy_from_dict({**default_policy().model_dump(), "serving_dim_margin": -0.01})
