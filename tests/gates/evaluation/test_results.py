"""gates.evaluation.results: JSON round trips, lookups that list what exists, and the parity record read from export.json."""

from __future__ import annotations

import numpy as np
import pytest

from gates.errors import MissingMetricError
from gates.evaluation.results import EvalResults, EvalResultsError, ParityRecord, RetrievalResult, StsResult
from gates.evaluation.retrieval_metrics import evaluate_run, sts_correlations


def _results() -> EvalResults:
    qrels = {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 1}}
    run = {"q1": {"d2": 0.9, "d1": 0.5}, "q2": {"d3": 0.7, "d1": 0.1}}
    scores = evaluate_run(qrels, run, metrics=("ndcg", "mrr"), ks=(10,))
    angles = np.array([0.1, 0.5, 0.9, 1.3])
    sts = sts_correlations(
        np.tile([1.0, 0.0], (4, 1)), np.stack([np.cos(angles), np.sin(angles)], 1), [4, 3, 2, 1]
    )
    return EvalResults(
        model={"label": "candidate", "name": "minilm-legal", "path": "artifacts/runs/r1/model"},
        retrieval=[
            RetrievalResult.from_scores("onnx-fp32", 384, scores),
            RetrievalResult.from_scores("onnx-int8", 384, scores),
        ],
        sts=[StsResult.from_scores("onnx-fp32", 384, sts)],
    )


def test_json_round_trip_keeps_everything() -> None:
    results = _results()
    again = EvalResults.from_json(results.to_json())
    assert again == results
    assert again.per_query_metric("mrr@10", "onnx-fp32", 384) == {"q1": 0.5, "q2": 1.0}
    assert again.mean_metric("mrr@10", "onnx-int8", 384) == pytest.approx(0.75)
    assert again.sts_metric("spearman", "onnx-fp32", 384) == pytest.approx(1.0)
    assert again.dims("onnx-fp32") == (384,)


def test_lookups_list_what_was_evaluated() -> None:
    results = _results()
    with pytest.raises(
        MissingMetricError,
        match=r"not evaluated at torch d384; available: onnx-fp32 d384; "
        r"onnx-int8 d384 \(metrics: mrr@10, ndcg@10\)",
    ):
        results.mean_metric("ndcg@10", "torch", 384)
    with pytest.raises(
        MissingMetricError, match=r"has no recall@10 at onnx-fp32 d384; available there: ndcg@10, mrr@10"
    ):
        results.per_query_metric("recall@10", "onnx-fp32", 384)
    with pytest.raises(
        MissingMetricError, match=r"no STS result at onnx-int8 d384; available: onnx-fp32 d384"
    ):
        results.sts_metric("pearson", "onnx-int8", 384)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["retrieval"][0].update(dim=0),
            r"retrieval\[0\]\.dim: Input should be greater than 0 \(got 0\)",
        ),
        (lambda d: d["retrieval"][1].update(dim=384, backend="onnx-fp32"), r"lists onnx-fp32 d384 twice"),
        (
            lambda d: d["retrieval"][0]["mean"].update({"NDCG@10": 0.5}),
            r"got 'NDCG@10'; use lowercase 'ndcg@10'",
        ),
        (
            lambda d: d["retrieval"][0]["per_query"]["q1"].pop("mrr@10"),
            r"per_query\['q1'\] has metrics \['ndcg@10'\]",
        ),
        (lambda d: d["retrieval"][0].update(n_queries=3), r"per_query holds 2 queries but n_queries is 3"),
        (
            lambda d: d["model"].update(label="champion"),
            r"model\.label: Input should be 'candidate' or 'baseline'",
        ),
        (
            lambda d: d["retrieval"][0].update(backend="onnx"),
            r"backend: Input should be 'onnx-fp32', 'onnx-int8' or ",
        ),
        (
            lambda d: d["sts"][0].update(spearman=float("nan")),
            r"sts\[0\]\.spearman: Input should be a finite number",
        ),
    ],
)
def test_invalid_results_name_the_field_and_value(change, message) -> None:
    data = _results().to_dict()
    change(data)
    with pytest.raises(EvalResultsError, match=message):
        EvalResults.from_dict(data, source="eval/metrics.json")


def test_unreadable_json_is_reported_with_its_source() -> None:
    with pytest.raises(EvalResultsError, match=r"eval/metrics.json: not JSON \(Expecting property name"):
        EvalResults.from_json("{oops", source="eval/metrics.json")


EXPORT_JSON = {
    "dims": [384, 128],
    "graphs": [
        {
            "path": "d384/model.onnx",
            "dim": 384,
            "precision": "fp32",
            "sha256": "ab",
            "parity": {"min_cosine": 0.99999},
        },
        {"path": "d384/model_int8.onnx", "dim": 384, "precision": "int8", "parity": {"min_cosine": 0.991}},
        {"path": "d128/model.onnx", "dim": 128, "precision": "fp32", "parity": {"min_cosine": 0.99998}},
    ],
}


def test_parity_record_reads_the_export_record() -> None:
    record = ParityRecord.from_export_json(EXPORT_JSON)
    assert [(g.backend, g.dim, g.min_cosine) for g in record.select("onnx-fp32")] == [
        ("onnx-fp32", 384, 0.99999),
        ("onnx-fp32", 128, 0.99998),
    ]
    assert record.select("onnx-int8", 384)[0].graph == "d384/model_int8.onnx"
    with pytest.raises(
        MissingMetricError, match=r"no onnx-int8 d128 graph; it has onnx-fp32 d384, onnx-int8 d384"
    ):
        record.select("onnx-int8", 128)


@pytest.mark.parametrize(
    ("export", "message"),
    [
        (
            {"graphs": [{"dim": 384, "precision": "fp32"}]},
            r"export.json: expected .* missing or malformed: 'parity'",
        ),
        ({"nothing": []}, r"missing or malformed: 'graphs'"),
        (
            {"graphs": [{"dim": 384, "precision": "bf16", "parity": {"min_cosine": 1}}]},
            r"graphs\[0\]\.backend: Input should be 'onnx-fp32', 'onnx-int8' or 'onnx-fp16' \(got 'onnx-bf16'\)",
        ),
        ({"graphs": []}, r"graphs: Tuple should have at least 1 item"),
    ],
)
def test_malformed_export_records_are_rejected(export, message) -> None:
    with pytest.raises(EvalResultsError, match=message):
        ParityRecord.from_export_json(export)
