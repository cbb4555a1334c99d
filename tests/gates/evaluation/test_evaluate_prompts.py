"""The gate's evaluation embeds queries and documents with their prompts, for the baseline as for the candidate;
the same model scored without its prompts scores differently, so a baseline scored wrongly would be visible."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import yaml

from gates.evaluation.encoders import onnx_encoder, torch_encoder
from gates.evaluation.evaluate import run_evaluation, score_encoder
from tests.prompted import DOCUMENT_PROMPT, QUERY_PROMPT
from training.data.loading import load_dataset
from training.run_dir import RunPaths


@pytest.fixture(scope="module")
def prompted_run(prompted_model_dir, tmp_path_factory):
    """A run whose candidate is the prompted base model itself, with a configured query prompt."""
    from training.export.export_run import export_run

    root = tmp_path_factory.mktemp("prompted-eval")
    run = root / "runs" / "same-as-base"
    run.mkdir(parents=True)
    prompts = {"query": "search_query: ", "document": DOCUMENT_PROMPT}
    (run / "config.yaml").write_text(
        yaml.safe_dump(
            {"base_model": str(prompted_model_dir), "data": {"path": "unused.csv"}, "prompts": prompts}
        )
    )
    shutil.copytree(prompted_model_dir, run / "model")
    export_run(run / "model", run / "onnx", dims=[32, 16], int8=False, prompts=prompts)
    return RunPaths(run)


def _ndcg(results, backend="onnx-fp32", dim=32):
    return next(r for r in results.retrieval if r.backend == backend and r.dim == dim).mean["ndcg@10"]


def _view(tiny_ir_dir):
    view = load_dataset(tiny_ir_dir, "ir").split("test")
    qrels = {q: d for q, d in view.qrels.items() if q in view.queries}
    query_ids, doc_ids = sorted(qrels), sorted(view.corpus)
    return (
        query_ids,
        [view.queries[q] for q in query_ids],
        doc_ids,
        [view.corpus[d] for d in doc_ids],
        qrels,
    )


def test_baseline_and_candidate_are_both_scored_with_the_runs_prompts(prompted_run, tiny_ir_dir):
    outcome = run_evaluation(prompted_run, tiny_ir_dir, backends=("onnx-fp32", "torch"))
    baseline_export = json.loads((prompted_run.root / "baseline" / "onnx" / "embedder.json").read_text())
    assert baseline_export["prompts"] == {"query": "search_query: ", "document": DOCUMENT_PROMPT}
    # Same weights, same prompts on both sides: identical scores (one side unprompted would differ, see below).
    assert _ndcg(outcome.candidate) == pytest.approx(_ndcg(outcome.baseline), abs=1e-6)
    assert _ndcg(outcome.candidate, "torch") == pytest.approx(_ndcg(outcome.candidate), abs=1e-3)


def test_the_score_differs_without_prompts(prompted_run, tiny_ir_dir):
    ids = _view(tiny_ir_dir)
    encoder = onnx_encoder(prompted_run.onnx, "fp32")
    assert encoder.prompts == {"query": "search_query: ", "document": DOCUMENT_PROMPT}
    with_prompts, _ = score_encoder(encoder, *ids, (32,), None, {}, "candidate")
    without, _ = score_encoder(replace(encoder, prompts={}), *ids, (32,), None, {}, "candidate")
    assert with_prompts[0].mean["ndcg@10"] != pytest.approx(without[0].mean["ndcg@10"], abs=1e-4)


def test_torch_reference_uses_the_models_own_prompts(prompted_model_dir):
    assert torch_encoder(prompted_model_dir, [32]).prompts == {
        "query": QUERY_PROMPT,
        "document": DOCUMENT_PROMPT,
    }
