"""Other architectures: each tiny model exports, passes parity, and the served runtime (service.model.embedder, what
the endpoint runs) reproduces SentenceTransformer.encode at every exported dim."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.model.embedder import OnnxEmbedder
from tests.architectures import build_distilbert, build_variant
from training.data.probe_texts import LONG_TEXT
from training.export.export_run import export_run

TEXTS = [
    "the patient took the tablet",
    "lease",
    "Der Mieter zahlt die Miete.",
    "42 mg twice a day",
    LONG_TEXT,
]
VARIANTS = [
    ("cls", True),
    ("mean", True),
    ("mean", False),
    ("weightedmean", True),
    ("lasttoken", True),
    ("lasttoken", False),
]


def _assert_served_equals_sentence_transformers(model_dir, onnx_dir, dims):
    from sentence_transformers import SentenceTransformer

    full = SentenceTransformer(str(model_dir), device="cpu").encode(TEXTS)
    for dim in dims:
        served = OnnxEmbedder.from_export_dir(onnx_dir).embed(TEXTS, dimensions=dim)
        expected = full[:, :dim] / np.linalg.norm(full[:, :dim], axis=1, keepdims=True)
        assert (served * expected).sum(axis=1).min() >= 0.9999, (dim, onnx_dir)


@pytest.mark.parametrize(
    "pooling, normalize", VARIANTS, ids=[f"{p}-{'norm' if n else 'raw'}" for p, n in VARIANTS]
)
def test_pooling_variants_export_pass_parity_and_serve(tiny_model_dir, tmp_path, pooling, normalize):
    model_dir = build_variant(tiny_model_dir, tmp_path / "model", pooling, normalize)
    result = export_run(model_dir, tmp_path / "onnx", dims=[32, 16], int8=False)
    assert result.spec.pooling == (pooling,) and result.spec.normalize is normalize
    assert min(record.parity.min_cosine for record in result.graphs) >= 0.9999
    _assert_served_equals_sentence_transformers(model_dir, tmp_path / "onnx", (32, 16))


def test_model_without_token_type_ids_exports_and_serves(tmp_path):
    model_dir = build_distilbert(tmp_path / "distilbert")
    result = export_run(model_dir, tmp_path / "onnx", dims=[32, 16])
    assert result.spec.architecture == "DistilBertModel" and result.spec.token_type_ids is False
    assert json.loads((tmp_path / "onnx" / "embedder.json").read_text())["inputs"] == [
        "input_ids",
        "attention_mask",
    ]
    assert min(r.parity.min_cosine for r in result.graphs if r.precision == "fp32") >= 0.9999
    _assert_served_equals_sentence_transformers(model_dir, tmp_path / "onnx", (32, 16))
