"""Nothing computed twice: a second evaluation reuses the baseline's export and embeddings from the cache, and
a changed graph or corpus is encoded again."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest
import yaml

from gates.evaluation.evaluate import run_evaluation
from service.model.embedder import OnnxEmbedder
from tests.conftest import build_tiny_model
from tests.synthetic import write_lay_jargon_beir
from training.run_dir import RunPaths


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_model_dir):
    from training.export.export_run import export_run

    root = tmp_path_factory.mktemp("eval-cache")
    data = write_lay_jargon_beir(root / "data", train_queries=20, test_queries=20)
    other = build_tiny_model(root / "other-model", seed=7)  # a different "fine-tuned" candidate
    template = root / "template"
    template.mkdir()
    (template / "config.yaml").write_text(
        yaml.safe_dump({"base_model": str(tiny_model_dir), "data": {"path": str(data)}})
    )
    shutil.copytree(other, template / "model")
    export_run(template / "model", template / "onnx", dims=[32, 16], int8=False)
    return root, template, data


@pytest.fixture()
def embed_calls(monkeypatch):
    """graph path -> texts embedded through the served runtime."""
    calls: Counter = Counter()
    original = OnnxEmbedder.embed

    def counting(self, texts, *args, **kwargs):
        calls[self.info.graph_path] += len(texts)
        return original(self, texts, *args, **kwargs)

    monkeypatch.setattr(OnnxEmbedder, "embed", counting)
    return calls


def _new_run(root, template, name):
    run = root / "runs" / name
    shutil.copytree(template, run)
    return RunPaths(run)


def _evaluate(run, data, cache, tiny_model_dir):
    return run_evaluation(
        run, data, "test", base_model=str(tiny_model_dir), backends=("onnx-fp32",), cache_dir=cache
    )


def test_second_evaluation_does_not_encode_the_unchanged_baseline(
    workspace, tiny_model_dir, embed_calls, monkeypatch
):
    root, template, data = workspace
    cache = root / "cache"
    first = _evaluate(_new_run(root, template, "first"), data, cache, tiny_model_dir)
    assert first.cache["misses"] == 4 and first.cache["hits"] == 0  # candidate + baseline, queries + corpus
    assert any("baseline" in path for path in embed_calls)

    import training.export.export_run

    def no_export(*args, **kwargs):
        raise AssertionError("the base model was exported again")

    monkeypatch.setattr(training.export.export_run, "export_run", no_export)
    embed_calls.clear()
    second_run = _new_run(root, template, "second")
    candidate_graph = second_run.onnx / "d32" / "model.onnx"
    _touch_graphs(second_run.onnx)  # a new candidate graph: same weights, different bytes
    second = _evaluate(second_run, data, cache, tiny_model_dir)
    assert not [path for path in embed_calls if "baseline" in path], (
        embed_calls
    )  # baseline: all from the cache
    assert embed_calls and {str(p) for p in embed_calls} <= {
        str(candidate_graph),
        str(candidate_graph.resolve()),
    }
    lookups = {e["label"]: e["hit"] for e in second.cache["lookups"]}
    assert lookups == {
        "candidate/onnx-fp32/queries": False,
        "candidate/onnx-fp32/corpus": False,
        "baseline/onnx-fp32/queries": True,
        "baseline/onnx-fp32/corpus": True,
    }
    assert second.baseline.retrieval == first.baseline.retrieval  # cached vectors score exactly the same
    written = json.loads((second_run.eval / "cache.json").read_text())
    assert written["hits"] == 2 and written["misses"] == 2


def test_a_changed_corpus_is_encoded_again(workspace, tiny_model_dir, embed_calls, tmp_path):
    root, template, data = workspace
    cache = root / "cache"
    _evaluate(_new_run(root, template, "warm"), data, cache, tiny_model_dir)
    changed = tmp_path / "data"
    shutil.copytree(data, changed)
    corpus = changed / "corpus.jsonl"
    corpus.write_text(corpus.read_text().replace('"text": "', '"text": "amended ', 1))
    embed_calls.clear()
    outcome = _evaluate(_new_run(root, template, "changed-corpus"), changed, cache, tiny_model_dir)
    lookups = {e["label"]: e["hit"] for e in outcome.cache["lookups"]}
    assert lookups["baseline/onnx-fp32/corpus"] is False and lookups["candidate/onnx-fp32/corpus"] is False
    assert lookups["baseline/onnx-fp32/queries"] is True  # the queries did not change
    assert any("baseline" in path for path in embed_calls)


def test_without_a_cache_dir_nothing_is_kept(workspace, tiny_model_dir):
    root, template, data = workspace
    outcome = _evaluate(_new_run(root, template, "no-cache"), data, None, tiny_model_dir)
    assert outcome.cache is None and not (root / "runs" / "no-cache" / "eval" / "cache.json").exists()


def _touch_graphs(onnx_dir):
    """Rewrite every graph with a new doc string (other bytes, same function) and record the new sha256s."""
    import onnx

    from training.run_dir import sha256_file

    for path in onnx_dir.rglob("*.onnx"):
        graph = onnx.load(str(path))
        graph.doc_string = "retrained"
        onnx.save(graph, str(path))

    config_path = onnx_dir / "embedder.json"
    config = json.loads(config_path.read_text())
    for precisions in config["graphs"].values():
        for entry in precisions.values():
            entry["sha256"] = sha256_file(onnx_dir / entry["path"])
    config_path.write_text(json.dumps(config))
