"""Prompts in training and export: resolved from the model or the config, recorded in the run and embedder.json,
carried by every training row exactly once, and reproduced by the exported runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.model.embedder import OnnxEmbedder
from service.model.prompts import apply_prompt
from tests import synthetic
from tests.prompted import DOCUMENT_PROMPT, QUERY_PROMPT
from training.config import load_config
from training.errors import ConfigError
from training.export.export_run import export_run
from training.finetune.train import train

TEXTS = ["what is the dose for a child", "the tenant pays rent", "heart blood pressure after a drug"]


@pytest.fixture(scope="module")
def prompted_export(prompted_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("prompted-export") / "onnx"
    export_run(prompted_model_dir, out, dims=[32, 16], int8=False)
    return out


def _st(model_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu")


def _unit(x: np.ndarray, dim: int) -> np.ndarray:
    return x[:, :dim] / np.linalg.norm(x[:, :dim], axis=1, keepdims=True)


def test_export_records_the_models_prompts(prompted_export):
    config = json.loads((prompted_export / "embedder.json").read_text())
    assert config["prompts"] == {"query": QUERY_PROMPT, "document": DOCUMENT_PROMPT}


@pytest.mark.parametrize("role", ["query", "document"])
@pytest.mark.parametrize("dim", [32, 16])
def test_runtime_with_the_prompt_equals_sentence_transformers_prompt_name(
    prompted_export, prompted_model_dir, role, dim
):
    embedder = OnnxEmbedder.from_export_dir(prompted_export)
    served = embedder.embed(apply_prompt(TEXTS, embedder.info.prompts[role]), dimensions=dim)
    expected = _unit(_st(prompted_model_dir).encode(TEXTS, prompt_name=role), dim)
    assert (served * expected).sum(axis=1).min() >= 0.9999
    unprompted = embedder.embed(TEXTS, dimensions=dim)  # the prompt matters: without it the vectors differ
    assert (unprompted * expected).sum(axis=1).min() < 0.999


def test_a_prompt_already_in_the_text_is_not_added_twice(prompted_export):
    embedder = OnnxEmbedder.from_export_dir(prompted_export)
    once = embedder.embed(apply_prompt(TEXTS, QUERY_PROMPT))
    again = embedder.embed(apply_prompt([QUERY_PROMPT + t for t in TEXTS], QUERY_PROMPT))
    np.testing.assert_allclose(once, again, atol=1e-6)


def test_export_prompts_override_the_models(prompted_model_dir, tmp_path):
    export_run(
        prompted_model_dir,
        tmp_path / "onnx",
        dims=[32],
        int8=False,
        prompts={"query": "search_query: ", "document": None},
    )
    config = json.loads((tmp_path / "onnx" / "embedder.json").read_text())
    assert config["prompts"] == {"query": "search_query: ", "document": DOCUMENT_PROMPT}


def test_pooling_that_excludes_the_prompt_is_refused(prompted_model_dir, tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    from training.errors import ExportError

    base = _st(prompted_model_dir)
    model = SentenceTransformer(
        modules=[base[0], Pooling(32, include_prompt=False), Normalize()],
        device="cpu",
        prompts=dict(base.prompts),
    )
    model.save(str(tmp_path / "model"))
    with pytest.raises(ExportError, match=r"excludes prompt tokens \(include_prompt=False\)"):
        export_run(tmp_path / "model", tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()


def test_unknown_prompt_role_in_the_config_is_refused():
    with pytest.raises(ConfigError, match=r"unknown field 'prompts.passage' \(allowed: query, document\)"):
        load_config(None, {"data.path": "x.csv", "prompts.passage": "p: "})


def test_training_rows_carry_each_prompt_exactly_once_and_the_run_records_them(
    tmp_path, prompted_model_dir, monkeypatch
):
    from sentence_transformers.base.modality import InputFormatter

    rows = [list(row) for row in synthetic.make_pairs(64)]
    rows[0][0] = QUERY_PROMPT + rows[0][0]  # rows that already carry their prompt
    rows[1][1] = "doc: " + rows[1][1]
    data = synthetic.write_csv(tmp_path / "pairs.csv", ["anchor", "positive"], rows)
    seen: list[str] = []
    original = InputFormatter.prepend_prompt_to_texts

    def recording(self, texts, prompt):
        out = original(self, texts, prompt)
        seen.extend(out)
        return out

    monkeypatch.setattr(InputFormatter, "prepend_prompt_to_texts", recording)
    cfg = load_config(
        None,
        {
            "base_model": str(prompted_model_dir),
            "data.path": str(data),
            "output_dir": str(tmp_path / "runs"),
            "batch_size": 16,
            "max_steps": 3,
            "dev_fraction": 0.0,
            "mining.strategy": "random",
            "prompts.document": "doc: ",
        },
    )
    result = train(cfg, progress=False)
    trained = [t for t in seen if t.startswith(("query: ", "doc: "))]
    assert len(trained) >= 3 * 16 * 3  # 3 steps x 16 rows x anchor + positive + mined negative
    assert not [t for t in seen if t.startswith(("query: query: ", "doc: doc: ", "doc: passage: "))]
    assert rows[0][0] in seen and "doc: " + rows[1][1].removeprefix("doc: ") in seen
    recorded = load_config(result.run_dir / "config.yaml")
    assert recorded.prompts.query == QUERY_PROMPT and recorded.prompts.document == "doc: "
    saved = json.loads((result.run_dir / "model" / "config_sentence_transformers.json").read_text())
    assert saved["prompts"]["query"] == QUERY_PROMPT and saved["prompts"]["document"] == "doc: "
