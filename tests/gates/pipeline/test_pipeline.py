"""The whole gated path on the tiny model: promote on a real gain, block a repeat that is not better, stop on bad
data, and the exit codes CI chains on."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from gates.cli import main
from service.registry.registry import Registry
from tests.synthetic import tiny_pipeline_config, write_lay_jargon_beir

pytestmark = pytest.mark.slow  # three short pipelines: ~1-2 minutes on 2 cores


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("pipeline")
    data = write_lay_jargon_beir(root / "data")
    config = root / "pipeline.yaml"
    config.write_text(yaml.safe_dump(tiny_pipeline_config(tiny_model_dir, data, root)))
    return root, config


EVAL_SET_READERS = {"load_eval_set", "pipeline_reference_texts"}  # the eval set, here the training folder too


def _spy_on_loads(monkeypatch) -> list[tuple[object, str]]:
    """(resolved path, calling function) of every load_dataset call made through the module's attribute."""
    import sys
    from pathlib import Path

    import training.data.loading as loading

    real, loads = loading.load_dataset, []

    def spy(path, *args, **kwargs):
        loads.append((Path(path).resolve(), sys._getframe(1).f_code.co_name))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(loading, "load_dataset", spy)
    return loads


def _cache_entries(root):
    return [json.loads(p.read_text()) for p in (root / "cache" / "embeddings").rglob("*.json")]


def _runs(root):
    return sorted((root / "runs").iterdir(), key=lambda p: p.stat().st_mtime)


def test_first_run_promotes_a_better_model(workspace, capsys, monkeypatch):
    root, config = workspace
    loads = _spy_on_loads(monkeypatch)
    code = main(["pipeline", str(config), "--set", "run_id=first"])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    assert "PROMOTED: v0001 is the champion" in out.err + out.out
    assert "[mine + train] mining hard negatives" in out.out
    assert re.search(r"epoch [\d.]+ step \d+/\d+: loss [\d.]+, dev ndcg@10_mean 0\.\d{4}", out.out), out.out
    run = root / "runs" / "first"
    decision = json.loads((run / "gate" / "decision.json").read_text())
    primary = next(r for r in decision["checks"] if r["check"] == "primary_improves")
    assert decision["passed"] and primary["delta"] > 0 and primary["p_value"] < 0.05
    # The forgetting check runs by default on the packaged general-domain STS set, and its delta is in the table.
    general = next(r for r in decision["checks"] if r["check"] == "general_domain_sts")
    assert general["status"] in {"pass", "fail"} and general["delta"] is not None, general
    assert "general_domain_sts" in out.out + out.err
    assert "early stopping: stop after" in out.out + out.err  # on by default, with the patience and why
    assert re.search(
        r"without a dev gain beyond noise .*the last dev gain beyond noise at step \d+", out.out + out.err
    )
    assert decision["baseline"].startswith("base model")
    pipeline = json.loads((run / "pipeline.json").read_text())
    assert [s["name"] for s in pipeline["stages"]] == [
        "data gate",
        "mine + train",
        "export",
        "evaluate",
        "gate",
        "compatibility",
        "drift reference",
        "promote",
    ]
    assert pipeline["stages"][5]["detail"]["skipped"].startswith(
        "no champion"
    )  # nothing to be compatible with
    assert "reference/reference.json" in json.loads((run / "manifest.json").read_text())["files"]
    assert "reference/reference.json" in Registry(root / "registry").verify("v0001")["files"]
    # The training table is read once; every stage that needs it (data gate, mining and training, compatibility,
    # the drift reference's trained texts) gets that copy. Reads of the same folder as the eval set are not counted.
    data_path = (root / "data").resolve()
    assert [caller for path, caller in loads if path == data_path and caller not in EVAL_SET_READERS] == [
        "_load_and_gate"
    ]
    assert list(pipeline["stages"]), "nothing to check: pipeline['stages'] is empty"
    assert all(s["status"] == "passed" and s["seconds"] >= 0 for s in pipeline["stages"])
    manifest = json.loads((run / "manifest.json").read_text())["files"]
    for rel in (
        "config.yaml",
        "data/report.json",
        "model/model.safetensors",
        "onnx/export.json",
        "eval/candidate.json",
        "eval/baseline.json",
        "eval/metrics_vs_dim.png",
        "gate/decision.json",
        "mined/hard_negatives.jsonl",
        "train/loss_curve.png",
    ):
        assert rel in manifest, rel
    assert not (run / "train" / "checkpoints").exists()
    report = (run / "report.html").read_text()
    assert "report.html" in manifest and "PROMOTED" in report and "v0001 is the champion" in report
    assert "ndcg@10_mean" in report and "Gate decision" in report  # the dev log table and the decision
    # Why training stopped when it did, and which checkpoint became the model.
    assert re.search(r"Early stopping: stop after \d+ evaluations without a dev gain beyond noise", report)
    assert (
        re.search(r"Checkpoint: (best dev|last) checkpoint", report)
        or "Checkpoint: checkpoint at step" in report
    )
    registry = Registry(root / "registry")
    assert registry.champion().version == "v0001"
    assert registry.verify("v0001")["run_id"] == "first"


def test_second_identical_run_is_blocked_and_says_why(workspace, capsys):
    root, config = workspace
    code = main(["pipeline", str(config), "--set", "run_id=second"])
    out = capsys.readouterr()
    assert code == 1, out.out + out.err
    assert "BLOCKED: quality gate failed, not promoted" in out.err
    decision = json.loads((root / "runs" / "second" / "gate" / "decision.json").read_text())
    assert decision["baseline"] == "champion v0001"
    # The champion is the first run's candidate, encoded then: nothing of the baseline is encoded again.
    cache = json.loads((root / "runs" / "second" / "eval" / "cache.json").read_text())
    baseline = [e for e in cache["lookups"] if e["label"].startswith("baseline/")]
    assert baseline and all(e["hit"] for e in baseline), cache
    assert any(e["label"] == "mining" for e in _cache_entries(root)), (
        "mining did not encode through the cache"
    )
    primary = next(r for r in decision["checks"] if r["check"] == "primary_improves")
    assert primary["status"] == "fail"
    registry = Registry(root / "registry")
    assert registry.champion().version == "v0001" and registry.versions() == ["v0001"]
    assert registry.history()[-1].action == "refused" and registry.history()[-1].run_id == "second"


def test_bad_data_stops_at_the_data_gate(workspace, tmp_path, capsys):
    root, config = workspace
    bad = write_lay_jargon_beir(tmp_path / "bad")
    with open(bad / "qrels" / "train.tsv", "a") as handle:
        handle.write("q1\tno-such-doc\t1\n")
    code = main(["pipeline", str(config), "--set", "run_id=bad", "--set", f"data.path={bad}"])
    out = capsys.readouterr()
    assert code == 1
    assert "data gate failed" in out.err
    pipeline = json.loads((root / "runs" / "bad" / "pipeline.json").read_text())
    assert [(s["name"], s["status"]) for s in pipeline["stages"]] == [("data gate", "blocked")]
    assert (root / "runs" / "bad" / "data" / "report.json").is_file()


def test_config_errors_exit_2(workspace, capsys):
    _, config = workspace
    assert main(["pipeline", str(config), "--set", "evaluation.split=7", "--set", "gate.bogus=1"]) == 2
    assert "unknown field 'gate.bogus'" in capsys.readouterr().err


def _ndcg_at_10(queries, docs, doc_ids, qrels: list[dict[str, int]]) -> float:
    """Mean graded NDCG@10 of `queries` (rows, unit length) against stored `docs`."""
    import numpy as np

    discount = 1.0 / np.log2(np.arange(2, 12))
    total = 0.0
    for row, rel in zip(np.argsort(-(queries @ docs.T), axis=1)[:, :10], qrels, strict=True):
        dcg = sum(rel.get(doc_ids[d], 0) * discount[r] for r, d in enumerate(row))
        ideal = sorted(rel.values(), reverse=True)[:10]
        total += dcg / float(np.dot(ideal, discount[: len(ideal)]))
    return total / len(qrels)


def test_an_upgrade_answers_in_the_stored_space_so_old_vectors_gain_without_reembedding(
    workspace, tmp_path, tiny_model_dir, capsys
):
    """Issue 25 end to end: v0001 is the base model as served; the first run's fine-tuned model, gated against
    it, is fitted into v0001's space (gates/compat/), offered only beyond noise, promoted as v0002 answering in
    v0001's space too, and served for real: a v0001 client switches its query model name (the openai client) and
    the NDCG@10 over the document vectors it stored with v0001 rises; pinned v0001 is unchanged."""
    import shutil

    import httpx
    import numpy as np
    import openai

    from gates.compat.stage import run_compatibility
    from service.model.embedder import OnnxEmbedder
    from tests.service.serving import ServerProcess, promote
    from training.data.loading import load_dataset
    from training.export.export_run import export_run
    from training.run_dir import RunPaths

    root, _ = workspace
    data, registry = root / "data", tmp_path / "registry"
    export_run(tiny_model_dir, tmp_path / "onnx-base", dims=[32, 16])
    promote(Registry(registry), tmp_path / "onnx-base", serving_dim=16)  # v0001: the base model as served
    run = RunPaths(shutil.copytree(root / "runs" / "first", tmp_path / "runs" / "upgrade"))
    for leftover in ("eval", "gate", "compat"):
        shutil.rmtree(run.root / leftover, ignore_errors=True)
    registry_args = ["--registry", str(registry)]
    evaluate = [
        "evaluate",
        str(run.root),
        "--data",
        str(data),
        *registry_args,
        "--backends",
        "onnx-fp32,onnx-int8",
    ]
    assert main(evaluate) == 0 and main(["gate", str(run.root)]) == 0  # gated against v0001
    capsys.readouterr()

    outcome = run_compatibility(run, registry, load_dataset(data, "ir"), data, "test", int8=False)
    [verdict] = outcome.verdicts
    assert verdict["offered"], verdict["reason"]
    served = next(row for row in verdict["rows"] if row["dim"] == 16)
    assert served["compat"] > served["old-old"] and served["ci"][0] > 0 and served["recovered"] >= 0.5
    assert json.loads((run.root / "compat" / "v0001" / "compat.json").read_text())["offered"] is True
    from gates.pipeline.run_report import build_report

    page = build_report(run).read_text()  # report.html shows old-old, compat and new-new per dim
    assert (
        "v0001: offered: at v0001&#39;s serving dim 16" in page
        or "v0001: offered: at v0001's serving dim 16" in page
    )
    assert "share of the re-embedding gain" in page

    assert main(["promote", str(run.root), *registry_args, "--no-bento-store"]) == 0
    manifest = Registry(registry).verify("v0002")
    assert manifest["compatible_spaces"]["v0001"]["serving_dim"] == 16
    assert "compat/v0001/onnx/embedder.json" in manifest["files"]
    assert "v0001" in Registry(registry).history()[-1].reason  # the history says which stored space gains

    view = load_dataset(data, "ir").split("test")
    query_ids = sorted(q for q in view.qrels if q in view.queries)
    doc_ids = sorted(view.corpus)
    queries = [view.queries[q] for q in query_ids]
    env = {"EMBEDGATE_REGISTRY": str(registry), "EMBEDGATE_DRIFT_SAMPLE_RATE": "0"}
    with ServerProcess(env, tmp_path / "server.log") as server:
        server.wait_for(lambda: httpx.get(f"{server.base_url}/ready").status_code == 200, what="/ready")
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused")

        def embed(model: str, texts: list[str], answered_by: str | None = None) -> np.ndarray:
            response = client.embeddings.create(model=model, input=texts)
            assert response.model == f"embedgate-embedder:{answered_by or model}", response.model
            return np.array([row.embedding for row in response.data], dtype=np.float32)

        stored = embed("v0001", [view.corpus[d] for d in doc_ids])  # what a v0001 client stored
        qrels = [view.qrels[q] for q in query_ids]
        before = _ndcg_at_10(embed("v0001", queries), stored, doc_ids, qrels)
        after = _ndcg_at_10(embed("v0002@v0001", queries), stored, doc_ids, qrels)
        assert after > before + 0.05, (before, after)
        # champion@v0001 follows the newest version that answers in v0001's space: now v0002
        np.testing.assert_array_equal(
            embed("champion@v0001", queries[:3], "v0002@v0001"), embed("v0002@v0001", queries[:3])
        )
        # the served compatible space is the exported compatible graph, exactly as gated
        in_process = OnnxEmbedder.from_export_dir(run.root / "compat" / "v0001" / "onnx").embed(
            queries[:3], dimensions=16
        )
        np.testing.assert_allclose(embed("v0002@v0001", queries[:3]), in_process, atol=1e-5)
        # pinned v0001 is the base graph, unchanged
        base = OnnxEmbedder.from_export_dir(tmp_path / "onnx-base").embed(queries[:3], dimensions=16)
        np.testing.assert_allclose(embed("v0001", queries[:3]), base, atol=1e-6)
        listed = [row["id"] for row in httpx.get(f"{server.base_url}/v1/models").json()["data"]]
        assert "v0002@v0001" in listed
        response = httpx.post(f"{server.base_url}/v1/embeddings", json={"input": "x", "model": "v0001@v0002"})
        assert response.status_code == 404 and "v0001 answers in no v0002 space" in response.text
        header = httpx.post(f"{server.base_url}/v1/embeddings", json={"input": "x", "model": "v0002@v0001"})
        assert header.headers["x-embedgate-model-version"] == "v0002@v0001"

    # The next candidate (here the same model again) targets v0002's space and v0001's, and in v0001's it must beat
    # v0002@v0001, what champion@v0001 serves now: an equal one is refused, so v0001's clients never step back
    again = RunPaths(shutil.copytree(run.root, tmp_path / "runs" / "again"))
    shutil.rmtree(again.root / "compat")
    chained = run_compatibility(again, registry, load_dataset(data, "ir"), data, "test", int8=False)
    by_space = {v["old_version"]: v for v in chained.verdicts}
    assert list(by_space) == ["v0002", "v0001"] and by_space["v0001"]["current"] == "v0002@v0001"
    assert not by_space["v0001"]["offered"], by_space["v0001"]["reason"]
    assert "its clients keep v0002@v0001" in by_space["v0001"]["reason"]
    assert all(row["vs_current"]["beyond_noise"] != "gain" for row in by_space["v0001"]["rows"])
