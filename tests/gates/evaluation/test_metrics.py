"""gates.evaluation.retrieval_metrics: hand-computed cases, tie-breaks, exclusions, agreement with ranx and pytrec_eval, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gates.evaluation.retrieval_metrics import (
    MetricInputError,
    evaluate_run,
    parse_metric_key,
    sts_correlations,
    top_k_run,
)

LOG2_3 = math.log2(3)

# q1: three relevant documents (d1 grade 2, d2 and d4 grade 1), d3 judged not relevant, d4 never retrieved.
# The run ranks d3, d1, d5 (unjudged), d2: grades by rank 0, 2, 0, 1.
GRADED_QRELS = {"q1": {"d1": 2, "d2": 1, "d3": 0, "d4": 1}}
GRADED_RUN = {"q1": {"d3": 0.9, "d1": 0.8, "d5": 0.7, "d2": 0.6}}


def test_graded_query_matches_hand_computation() -> None:
    scores = evaluate_run(GRADED_QRELS, GRADED_RUN, ks=(1, 3, 5))
    q1 = scores.per_query["q1"]
    ideal_dcg_3 = 3 / 1 + 1 / LOG2_3 + 1 / 2  # grades 2, 1, 1 at ranks 1..3: gains 3, 1, 1
    assert q1["ndcg@1"] == 0.0
    assert q1["ndcg@3"] == pytest.approx((3 / LOG2_3) / ideal_dcg_3)
    # rank 4 holds d2 (gain 1, discount 1/log2(5)); the ideal list has only three non-zero gains.
    assert q1["ndcg@5"] == pytest.approx((3 / LOG2_3 + 1 / math.log2(5)) / ideal_dcg_3)
    assert (q1["mrr@1"], q1["mrr@3"], q1["mrr@5"]) == (0.0, 0.5, 0.5)
    assert q1["map@3"] == pytest.approx((1 / 2) / 3)
    assert q1["map@5"] == pytest.approx((1 / 2 + 2 / 4) / 3)
    assert q1["recall@3"] == pytest.approx(1 / 3)
    assert q1["recall@5"] == pytest.approx(2 / 3)
    assert q1["precision@3"] == pytest.approx(1 / 3)
    assert q1["precision@5"] == pytest.approx(2 / 5)  # K larger than the list: still divided by K
    assert q1["f1@3"] == pytest.approx(1 / 3)
    assert q1["f1@5"] == pytest.approx(2 * (2 / 5) * (2 / 3) / (2 / 5 + 2 / 3))
    assert q1["f1@1"] == 0.0  # precision and recall both 0


def test_binary_query_and_macro_average() -> None:
    qrels = {**GRADED_QRELS, "q2": {"a": 1, "b": 1}}
    run = {**GRADED_RUN, "q2": {"a": 0.2, "x": 0.9, "b": 0.8}}  # ranks x, b, a: hits at 2 and 3
    scores = evaluate_run(qrels, run, metrics=("ndcg", "map", "mrr"), ks=(10,))
    q2 = scores.per_query["q2"]
    assert q2["ndcg@10"] == pytest.approx((1 / LOG2_3 + 1 / 2) / (1 + 1 / LOG2_3))
    assert q2["map@10"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert q2["mrr@10"] == pytest.approx(1 / 2)
    assert scores.mean["mrr@10"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert scores.mean["map@10"] == pytest.approx(((1 / 2 + 2 / 4) / 3 + (1 / 2 + 2 / 3) / 2) / 2)
    assert list(scores.mean) == ["ndcg@10", "map@10", "mrr@10"]
    assert scores.n_queries == 2


@pytest.mark.parametrize(
    "scored_docs",
    [
        {"c": 0.9, "a": 0.5, "b": 0.5},
        {"c": 0.9, "b": 0.5, "a": 0.5},  # same scores, other insertion order: same ranking
    ],
)
def test_equal_scores_rank_by_doc_id(scored_docs: dict[str, float]) -> None:
    scores = evaluate_run({"q": {"b": 1}}, {"q": scored_docs}, metrics=("mrr",), ks=(10,))
    assert scores.per_query["q"]["mrr@10"] == pytest.approx(1 / 3)  # c, then a before b


def test_queries_without_relevant_docs_are_excluded_and_reported() -> None:
    qrels = {**GRADED_QRELS, "no_relevant": {"d1": 0}, "not_retrieved": {"d9": 1}}
    run = {**GRADED_RUN, "no_relevant": {"d1": 1.0}, "unjudged": {"d1": 1.0}}
    scores = evaluate_run(qrels, run, metrics=("recall",), ks=(5,))
    assert scores.skipped_queries == ("no_relevant",)
    assert scores.unretrieved_queries == ("not_retrieved",)
    assert scores.n_unjudged_run_queries == 1
    assert scores.n_queries == 2
    assert set(scores.per_query) == {"q1", "not_retrieved"}
    assert scores.per_query["not_retrieved"]["recall@5"] == 0.0
    assert scores.mean["recall@5"] == pytest.approx((2 / 3 + 0) / 2)


def test_numpy_typed_grades_scores_and_ks_are_accepted() -> None:
    # qrels read with pandas carry numpy integers; scores from a matrix carry numpy floats
    qrels = {q: {d: np.int64(g) for d, g in docs.items()} for q, docs in GRADED_QRELS.items()}
    run = {q: {d: np.float32(s) for d, s in docs.items()} for q, docs in GRADED_RUN.items()}
    scores = evaluate_run(qrels, run, ks=(np.int64(5),))
    assert scores.mean == evaluate_run(GRADED_QRELS, GRADED_RUN, ks=(5,)).mean
    assert "ndcg@5" in scores.mean


def test_results_are_immutable_and_serialisable() -> None:
    scores = evaluate_run(GRADED_QRELS, GRADED_RUN, metrics=("ndcg",), ks=(3,))
    with pytest.raises(TypeError):
        scores.mean["ndcg@3"] = 1.0  # type: ignore[index]
    as_dict = scores.to_dict()
    assert as_dict["per_query"]["q1"]["ndcg@3"] == scores.mean["ndcg@3"]
    assert scores.metric_per_query("ndcg@3") == {"q1": scores.mean["ndcg@3"]}


def _random_case(seed: int, n_queries: int = 60, n_docs: int = 40) -> tuple[dict, dict]:
    """Graded qrels and a run with many tied scores (so the doc-id tie-break matters)."""
    rng = np.random.default_rng(seed)
    qrels, run = {}, {}
    for q in range(n_queries):
        judged = rng.choice(n_docs, size=int(rng.integers(1, 8)), replace=False)
        grades = {f"d{d}": int(rng.integers(0, 4)) for d in judged}
        grades[f"d{judged[0]}"] = max(1, grades[f"d{judged[0]}"])  # every query has a relevant doc
        qrels[f"q{q}"] = grades
        retrieved = rng.choice(n_docs, size=int(rng.integers(1, 30)), replace=False)
        run[f"q{q}"] = {f"d{d}": float(rng.integers(0, 5)) for d in retrieved}
    return qrels, run


def _by_rank(run: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """The same rankings with strictly decreasing scores, so a library cannot order ties its own way."""
    ranked = {}
    for qid, docs in run.items():
        order = sorted(docs, key=lambda d: (-docs[d], d))
        ranked[qid] = {doc: float(len(order) - rank) for rank, doc in enumerate(order)}
    return ranked


@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_ranx_on_graded_runs(seed: int) -> None:
    from ranx import Qrels, Run, evaluate

    qrels, run = _random_case(seed)
    ks = (1, 3, 10, 50)
    ours = evaluate_run(qrels, run, ks=ks)
    ranx_names = {
        "ndcg": "ndcg_burges",
        "mrr": "mrr",
        "map": "map",
        "recall": "recall",
        "precision": "precision",
        "f1": "f1",
    }
    wanted = [f"{ranx_names[m]}@{k}" for m in ranx_names for k in ks]
    ranx_run = Run(_by_rank(run))
    evaluate(Qrels(qrels), ranx_run, wanted)  # stores per-query scores, keyed by query id, in ranx_run.scores
    for ours_name, ranx_name in ranx_names.items():
        for k in ks:
            expected = dict(ranx_run.scores[f"{ranx_name}@{k}"])
            got = ours.metric_per_query(f"{ours_name}@{k}")
            assert got == pytest.approx(expected, abs=1e-12), f"{ours_name}@{k}"


def test_agrees_with_pytrec_eval_on_binary_runs() -> None:
    import pytrec_eval

    graded, run = _random_case(2)
    qrels = {q: {d: int(g >= 1) for d, g in docs.items()} for q, docs in graded.items()}  # linear = exp gain
    ks = (1, 3, 10, 50)
    ours = evaluate_run(qrels, run, metrics=("ndcg", "map", "recall", "precision"), ks=ks)
    cuts = ",".join(map(str, ks))
    evaluator = pytrec_eval.RelevanceEvaluator(
        qrels, {f"ndcg_cut.{cuts}", f"map_cut.{cuts}", f"recall.{cuts}", f"P.{cuts}"}
    )
    theirs = evaluator.evaluate(_by_rank(run))
    for ours_name, trec_name in (
        ("ndcg", "ndcg_cut"),
        ("map", "map_cut"),
        ("recall", "recall"),
        ("precision", "P"),
    ):
        for k in ks:
            expected = {q: theirs[q][f"{trec_name}_{k}"] for q in qrels}
            assert ours.metric_per_query(f"{ours_name}@{k}") == pytest.approx(expected, abs=1e-9)


def test_top_k_run_breaks_ties_by_doc_id_and_clips_k() -> None:
    doc_ids = ["d3", "d1", "d2", "d10"]
    scores = np.array([[0.5, 0.5, 0.9, 0.5], [0.1, 0.2, 0.3, 0.4]])
    run = top_k_run(["qa", "qb"], doc_ids, scores, k=2)
    assert list(run["qa"].items()) == [("d2", 0.9), ("d1", 0.5)]
    assert list(run["qb"]) == ["d10", "d2"]
    everything = top_k_run(["qa", "qb"], doc_ids, scores, k=10)
    assert list(everything["qa"]) == ["d2", "d1", "d10", "d3"]  # string order: "d1" < "d10" < "d3"


def test_top_k_run_matches_a_full_sort() -> None:
    rng = np.random.default_rng(3)
    doc_ids = [f"doc{i}" for i in rng.permutation(300)]
    query_ids = [f"q{i}" for i in range(50)]
    scores = rng.integers(0, 6, size=(50, 300)).astype(np.float32)  # heavy ties
    run = top_k_run(query_ids, doc_ids, scores, k=17)
    for row, qid in enumerate(query_ids):
        expected = sorted(range(300), key=lambda j: (-scores[row, j], doc_ids[j]))[:17]
        assert list(run[qid]) == [doc_ids[j] for j in expected]


def test_sts_correlations_on_known_angles() -> None:
    angles = np.array([0.2, 0.6, 1.0, 1.4])
    first = np.tile([1.0, 0.0], (4, 1))
    second = np.stack([np.cos(angles), np.sin(angles)], axis=1) * 3.0  # norm must not matter
    cosine = np.cos(angles)
    exact = sts_correlations(first, second, 2 * cosine + 1)
    assert exact.spearman == pytest.approx(1.0)
    assert exact.pearson == pytest.approx(1.0)
    assert exact.n_pairs == 4
    # gold ranks swap the two most similar pairs: spearman = 1 - 6 * (1 + 1) / (4 * 15) = 0.8
    swapped = sts_correlations(first, second, [3.0, 4.0, 2.0, 1.0])
    assert swapped.spearman == pytest.approx(0.8)
    assert sts_correlations(first, second, -cosine).pearson == pytest.approx(-1.0)


def test_parse_metric_key() -> None:
    assert parse_metric_key("map@100") == ("map", 100)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metrics": ("ndcg", "hits")}, r"unknown metric 'hits'; expected one of ndcg, mrr"),
        ({"metrics": ("ndcg@10",)}, r"unknown metric 'ndcg@10' \(names go without '@K'"),
        ({"ks": (10, 0)}, r"every K must be a positive integer .*got 0"),
        ({"ks": (True,)}, r"every K must be a positive integer .*got True"),
        ({"ks": ()}, r"no cut-offs requested"),
        ({"qrels": {}}, r"qrels is empty"),
        ({"qrels": {"q1": {"d1": 0}}}, r"none of the 1 judged queries has a document with grade >= 1"),
        ({"qrels": {"q1": {"d1": 1.5}}}, r"qrels\['q1'\]\['d1'\] is 1.5; expected a relevance grade"),
        ({"qrels": {"q1": {"d1": -1}}}, r"is -1; expected a relevance grade, an integer >= 0"),
        (
            {"run": {"other": {"d1": 1.0}}},
            r"the run holds none of the 1 judged queries: run query ids 'other'",
        ),
        ({"run": {"q1": {"d1": float("nan")}}}, r"run\['q1'\]\['d1'\] is nan; expected a finite number"),
    ],
)
def test_evaluate_run_rejects_bad_input(kwargs: dict, message: str) -> None:
    arguments = {"qrels": GRADED_QRELS, "run": GRADED_RUN, **kwargs}
    with pytest.raises(MetricInputError, match=message):
        evaluate_run(**arguments)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("NDCG@10", r"got 'NDCG@10'; use lowercase 'ndcg@10'"),
        ("ndcg", r"got 'ndcg'"),
        ("recall@0", r"got 'recall@0'"),
    ],
)
def test_parse_metric_key_rejects_bad_keys(key: str, message: str) -> None:
    with pytest.raises(MetricInputError, match=message):
        parse_metric_key(key)


def test_metric_per_query_names_available_metrics() -> None:
    scores = evaluate_run(GRADED_QRELS, GRADED_RUN, metrics=("ndcg",), ks=(3,))
    with pytest.raises(MetricInputError, match=r"metric 'mrr@10' was not computed; available: ndcg@3"):
        scores.metric_per_query("mrr@10")


@pytest.mark.parametrize(
    ("query_ids", "doc_ids", "scores", "k", "message"),
    [
        (["q"], ["a", "b"], np.zeros((1, 3)), 1, r"shape .*= \(1, 2\), got shape \(1, 3\)"),
        (["q"], ["a", "b"], np.zeros((1, 2)), 0, r"k must be a positive integer .*got 0"),
        (["q"], ["a", "a"], np.zeros((1, 2)), 1, r"doc_ids must be unique, found duplicates 'a'"),
        (["q"], ["a", "b"], np.array([[0.1, np.nan]]), 1, r"scores\[0, 1\] \(query 'q', doc 'b'\) is nan"),
        (["q"], [], np.zeros((1, 0)), 1, r"doc_ids is empty"),
    ],
)
def test_top_k_run_rejects_bad_input(query_ids, doc_ids, scores, k, message) -> None:
    with pytest.raises(MetricInputError, match=message):
        top_k_run(query_ids, doc_ids, scores, k)


@pytest.mark.parametrize(
    ("first", "second", "gold", "message"),
    [
        (np.ones((3, 2)), np.ones((4, 2)), [1, 2, 3], r"got shapes \(3, 2\), \(4, 2\) and \(3,\)"),
        (
            np.ones((2, 2)),
            np.ones((2, 2)),
            [1, 2],
            r"need at least 3 sentence pairs for a correlation, got 2",
        ),
        (np.eye(3), np.zeros((3, 3)), [1, 2, 3], r"embeddings2 row 0 is all zeros"),
        (np.eye(3), np.eye(3)[::-1], [1, 1, 1], r"all gold scores are equal \(1.0\)"),
    ],
)
def test_sts_correlations_rejects_bad_input(first, second, gold, message) -> None:
    with pytest.raises(MetricInputError, match=message):
        sts_correlations(first, second, gold)
