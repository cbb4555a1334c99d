"""fp16 export: written only where it keeps parity with the fp32 graph (cosine >= 0.999), else refused and recorded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import build_tiny_model
from tests.service.serving import TINY_DIMS
from training.export.export_run import export_run
from training.export.fp16 import MIN_FP16_COSINE


def _run(path: Path, feeds: dict) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["sentence_embedding"], feeds)[0]


def _feeds(export_dir: Path, texts: list[str]) -> dict:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(export_dir / "tokenizer" / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0)
    encodings = tokenizer.encode_batch(texts)
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }


TEXTS = ["the patient took the tablet twice a day", "lease", "what is the dose of the drug for a child?"]


def test_fp16_graphs_are_written_per_dim_recorded_and_keep_parity(tiny_export_fp16):
    import onnx

    out = tiny_export_fp16
    export = json.loads((out / "export.json").read_text())
    embedder = json.loads((out / "embedder.json").read_text())
    assert export["fp16"]["status"] == "written" and export["fp16"]["reason"] is None
    assert "fp16" in embedder["precisions"]
    fp16_records = {g["dim"]: g for g in export["graphs"] if g["precision"] == "fp16"}
    assert sorted(fp16_records) == sorted(TINY_DIMS)
    feeds = _feeds(out, TEXTS)
    for dim, record in fp16_records.items():
        path = out / record["path"]
        assert record["path"] == f"d{dim}/model_fp16.onnx"
        assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert embedder["graphs"][str(dim)]["fp16"] == {"path": record["path"], "sha256": record["sha256"]}
        assert record["parity"]["reference"] == "fp32 graph"
        assert record["parity"]["min_cosine"] >= MIN_FP16_COSINE
        # Really half precision inside, with the float32 output the embedder contract asks for.
        graph = onnx.load(str(path))
        weights = [
            t
            for t in graph.graph.initializer
            if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
        ]
        assert sum(t.data_type == onnx.TensorProto.FLOAT16 for t in weights) > len(weights) / 2
        assert graph.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        # Parity measured here independently of the export's own code: fp16 vs fp32 on other texts.
        half, full = _run(path, feeds), _run(out / f"d{dim}/model.onnx", feeds)
        assert half.dtype == np.float32 and half.shape == (len(TEXTS), dim)
        cosines = (half * full).sum(axis=1) / np.linalg.norm(half, axis=1) / np.linalg.norm(full, axis=1)
        assert cosines.min() >= MIN_FP16_COSINE
        assert np.abs(half - full).max() > 0  # a real conversion, not a copy of the fp32 graph


def test_fp16_is_not_built_unless_asked(tiny_exports):
    export = json.loads((tiny_exports["a"] / "export.json").read_text())
    assert export["fp16"] is None
    assert not list(tiny_exports["a"].rglob("model_fp16.onnx"))
    assert "fp16" not in json.loads((tiny_exports["a"] / "embedder.json").read_text())["precisions"]


@pytest.fixture(scope="module")
def fp16_breaking_model(tmp_path_factory) -> Path:
    """The tiny model with word embeddings scaled far beyond float16's range (65504): fp32 reproduces it (the
    LayerNorm right after brings them back to scale), fp16 cannot even store them."""
    from sentence_transformers import SentenceTransformer

    root = tmp_path_factory.mktemp("fp16-breaking")
    model = SentenceTransformer(str(build_tiny_model(root / "src", seed=3)), device="cpu")
    embeddings = model[0].auto_model.embeddings.word_embeddings
    embeddings.weight.data *= 1e7
    out = root / "model"
    model.save(str(out), safe_serialization=True)
    return out


def test_an_fp16_graph_that_breaks_parity_is_refused_and_the_reason_recorded(fp16_breaking_model, tmp_path):
    out = tmp_path / "onnx"
    result = export_run(fp16_breaking_model, out, dims=list(TINY_DIMS), fp16=True)
    # The export itself succeeds: fp32 and int8 are fine, fp16 is left out everywhere (all dims or none).
    assert result.fp16["status"] == "refused"
    assert "below 0.999" in result.fp16["reason"] and "no fp16 graph was written" in result.fp16["reason"]
    assert min(p["min_cosine"] for p in result.fp16["parity"].values()) < MIN_FP16_COSINE
    assert not list(out.rglob("model_fp16.onnx"))
    assert {g.precision for g in result.graphs} == {"fp32", "int8"}
    export = json.loads((out / "export.json").read_text())
    assert export["fp16"]["status"] == "refused" and export["fp16"]["reason"] == result.fp16["reason"]
    assert "fp16" not in json.loads((out / "embedder.json").read_text())["precisions"]


def test_the_parity_bar_is_applied_as_given(tiny_model_dir, tmp_path):
    # Nothing reaches cosine 1.00001 (float rounding stays far below that), so a bar there refuses: the bar is what decides, not a constant.
    result = export_run(
        tiny_model_dir, tmp_path / "onnx", dims=[32], int8=False, fp16=True, min_fp16_cosine=1.00001
    )
    assert result.fp16["status"] == "refused"
    assert not (tmp_path / "onnx" / "d32" / "model_fp16.onnx").exists()


def test_the_gate_reads_an_export_with_fp16_graphs(tiny_export_fp16):
    # The quality gate's parity record is read from export.json: fp16 rows must not make it unreadable.
    from gates.evaluation.results import ParityRecord

    record = ParityRecord.from_export_json(json.loads((tiny_export_fp16 / "export.json").read_text()))
    assert sorted(g.dim for g in record.select("onnx-fp16")) == sorted(TINY_DIMS)
    assert all(g.min_cosine >= MIN_FP16_COSINE for g in record.select("onnx-fp16"))
