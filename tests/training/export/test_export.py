"""ONNX export: layout, parity per dim against the PyTorch model, refusals, and all-or-nothing writes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY_DIM
from training.data.probe_texts import LONG_TEXT, PROBE_TEXTS
from training.errors import ConfigError, ExportError
from training.export.export_run import default_dims, export_run, validate_dims

TINY_DIMS = [TINY_DIM, 16, 8]
TEXTS = [
    "the patient took the tablet",
    "lease",
    "Der Mieter zahlt die Miete.",
    "42 mg twice a day",
    LONG_TEXT,
]


@pytest.fixture(scope="module")
def tiny_export(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "onnx"
    return export_run(tiny_model_dir, out, dims=TINY_DIMS)


def reference(model_dir: Path, texts: list[str], dim: int) -> np.ndarray:
    """What the graph for `dim` must reproduce: ST encode -> first dim values -> L2 normalise."""
    from sentence_transformers import SentenceTransformer

    full = SentenceTransformer(str(model_dir), device="cpu").encode(texts, convert_to_numpy=True)
    return full[:, :dim] / np.linalg.norm(full[:, :dim], axis=1, keepdims=True)


def run_graph(path: Path, model_dir: Path, texts: list[str]) -> np.ndarray:
    """Run a graph directly on transformers-tokenised input: independent of the export's own parity code."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="np")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {name: batch[name].astype(np.int64) for name in ("input_ids", "attention_mask")}
    return session.run(["sentence_embedding"], feeds)[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_layout_and_records_match_the_files(tiny_export):
    out = tiny_export.out_dir
    assert (out / "tokenizer" / "tokenizer.json").is_file()
    records = json.loads((out / "export.json").read_text())["graphs"]
    assert {(r["dim"], r["precision"]) for r in records} == {
        (d, p) for d in TINY_DIMS for p in ("fp32", "int8")
    }
    for record in records:
        path = out / record["path"]
        assert path.name == ("model.onnx" if record["precision"] == "fp32" else "model_int8.onnx")
        assert path.parent.name == f"d{record['dim']}"
        assert record["sha256"] == sha256(path) and record["size_bytes"] == path.stat().st_size
        assert record["opset"] == 17
    config = json.loads((out / "embedder.json").read_text())
    assert config["dims"] == TINY_DIMS and config["full_dim"] == TINY_DIM and config["max_seq_length"] == 64
    assert config["pooling"] == ["mean"] and config["inputs"] == ["input_ids", "attention_mask"]
    assert config["graphs"]["8"]["int8"] == {
        "path": "d8/model_int8.onnx",
        "sha256": sha256(out / "d8/model_int8.onnx"),
    }
    assert not list(out.parent.glob(".onnx.*")), "staging directories must not be left behind"


def test_tokenizer_json_truncates_at_max_seq_length_and_does_not_pad(tiny_export):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tiny_export.out_dir / "tokenizer" / "tokenizer.json"))
    assert tokenizer.truncation["max_length"] == 64 and tokenizer.padding is None
    assert len(tokenizer.encode(LONG_TEXT).ids) == 64


@pytest.mark.parametrize("dim", TINY_DIMS)
def test_fp32_graph_reproduces_the_model_per_dim(tiny_export, tiny_model_dir, dim):
    output = run_graph(tiny_export.out_dir / f"d{dim}" / "model.onnx", tiny_model_dir, TEXTS)
    expected = reference(tiny_model_dir, TEXTS, dim)
    assert output.shape == (len(TEXTS), dim) and output.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(output, axis=1), 1.0, atol=1e-5)
    assert (output * expected).sum(axis=1).min() >= 0.9999
    assert tiny_export.graph(dim, "fp32").parity.min_cosine >= 0.9999


@pytest.mark.parametrize("dim", TINY_DIMS)
def test_int8_graph_is_close_and_its_parity_is_recorded(tiny_export, tiny_model_dir, dim):
    output = run_graph(tiny_export.out_dir / f"d{dim}" / "model_int8.onnx", tiny_model_dir, TEXTS)
    cosines = (output * reference(tiny_model_dir, TEXTS, dim)).sum(axis=1)
    np.testing.assert_allclose(np.linalg.norm(output, axis=1), 1.0, atol=1e-5)
    assert cosines.min() >= 0.99
    parity = tiny_export.graph(dim, "int8").parity
    assert parity.texts == len(PROBE_TEXTS) and 0.99 <= parity.min_cosine <= parity.mean_cosine < 1.0
    assert parity.max_abs_diff > tiny_export.graph(dim, "fp32").parity.max_abs_diff


def test_graph_takes_two_int64_inputs_with_dynamic_batch_and_sequence(tiny_export):
    import onnx

    graph = onnx.load(str(tiny_export.out_dir / "d16" / "model.onnx")).graph
    inputs = {i.name: i.type.tensor_type for i in graph.input}
    assert set(inputs) == {"input_ids", "attention_mask"}
    for tensor in inputs.values():
        assert tensor.elem_type == onnx.TensorProto.INT64
        assert [d.dim_param for d in tensor.shape.dim] == ["batch", "sequence"]
    (output,) = graph.output
    assert output.name == "sentence_embedding"
    assert [d.dim_value or d.dim_param for d in output.type.tensor_type.shape.dim] == ["batch", 16]


@pytest.mark.parametrize(
    ("full_dim", "expected"),
    [
        (384, (384, 256, 128, 64)),
        (768, (768, 512, 256, 128, 64)),
        (512, (512, 256, 128, 64)),
        (100, (100, 64)),
        (64, (64,)),
        (32, (32,)),
    ],
)
def test_default_dims_halve_down_to_64(full_dim, expected):
    assert default_dims(full_dim) == expected


@pytest.mark.parametrize(
    ("dims", "message"),
    [
        ([0], r"\[0\] outside the allowed range 1\.\.384"),
        ([384, -1], r"\[-1\] outside the allowed range 1\.\.384"),
        ([512, 384], r"\[512\] outside the allowed range 1\.\.384"),
        ([384, 128.0], r"\[128\.0\] outside"),
        ([384, 128, 128], r"duplicates in \[384, 128, 128\]"),
        ([256, 128], r"must include the model dim 384"),
        ([], r"non-empty list of integers in 1\.\.384, got \[\]"),
        ("384", r"non-empty list of integers in 1\.\.384, got '384'"),
    ],
)
def test_bad_dims_are_config_errors_naming_the_range(dims, message):
    with pytest.raises(ConfigError, match=message):
        validate_dims(dims, 384)


def test_dims_are_sorted_largest_first():
    assert validate_dims([64, 384, 128], 384) == (384, 128, 64)


def test_export_run_checks_dims_and_leaves_nothing(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"\[33\] outside the allowed range 1\.\.32"):
        export_run(tiny_model_dir, tmp_path / "onnx", dims=[33, 32])
    assert list(tmp_path.iterdir()) == []


def test_existing_export_is_refused_unless_overwrite(tiny_model_dir, tmp_path):
    out = tmp_path / "onnx"
    export_run(tiny_model_dir, out, int8=False)
    before = sha256(out / "export.json")
    with pytest.raises(ConfigError, match=r"onnx already exists; exports are immutable.*overwrite=True"):
        export_run(tiny_model_dir, out, dims=[32, 16])
    assert sha256(out / "export.json") == before
    result = export_run(tiny_model_dir, out, dims=[32, 16], int8=False, overwrite=True)
    assert json.loads((out / "embedder.json").read_text())["dims"] == [32, 16] == list(result.dims)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]


def test_failure_mid_export_leaves_no_directory(tiny_model_dir, tmp_path, monkeypatch):
    import training.export.export_run as export_module

    calls = []

    def quantize_then_fail(fp32_path, int8_path, settings):
        calls.append(fp32_path)
        raise RuntimeError("disk full while quantising")

    monkeypatch.setattr(export_module, "quantize_int8", quantize_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        export_run(tiny_model_dir, tmp_path / "onnx", dims=[32, 16])
    assert calls and calls[0].name == "model.onnx"  # it failed after writing a graph, not before
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_previous_export(tiny_model_dir, tmp_path, monkeypatch):
    import training.export.export_run as export_module

    out = tmp_path / "onnx"
    export_run(tiny_model_dir, out, int8=False)
    before = {p.name: sha256(p) for p in (out / "d32").iterdir()}
    monkeypatch.setattr(export_module, "export_graph", lambda *args: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError, match="killed"):
        export_run(tiny_model_dir, out, overwrite=True)
    assert {p.name: sha256(p) for p in (out / "d32").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]


def test_parity_check_catches_a_wrong_tokenizer_export(tiny_model_dir, tmp_path, monkeypatch):
    """The parity run tokenises through the exported tokenizer.json, so a tokenizer saved with the wrong
    truncation (as MiniLM's own file has: 128, not 256) fails the export instead of shipping."""
    import training.export.export_run as export_module

    write_tokenizer = export_module._write_tokenizer

    def truncating_too_early(model, spec, folder):
        from tokenizers import Tokenizer

        path = write_tokenizer(model, spec, folder)
        tokenizer = Tokenizer.from_file(str(path))
        tokenizer.enable_truncation(max_length=16)
        tokenizer.save(str(path))
        return path

    monkeypatch.setattr(export_module, "_write_tokenizer", truncating_too_early)
    with pytest.raises(
        ExportError,
        match=r"fp32 graph for dim 32 does not reproduce the model: min cosine "
        r"0\.\d+ \(probe text \d+\), expected >= 0\.9999",
    ):
        export_run(tiny_model_dir, tmp_path / "onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"opset": 9}, r"opset: expected an integer in 14\.\.20, got 9"),
        ({"probe_texts": []}, r"probe_texts: expected a non-empty list of strings, got \[\]"),
        ({"probe_texts": ["ok", None]}, r"probe_texts: expected a non-empty list of strings"),
    ],
)
def test_bad_arguments_are_config_errors(tiny_model_dir, tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        export_run(tiny_model_dir, tmp_path / "onnx", **kwargs)


def test_missing_model_dir_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"expected a SentenceTransformer save .* found no such folder"):
        export_run(tmp_path / "nope", tmp_path / "onnx")


def _tiny_variant(tiny_model_dir: Path, target: Path, heads) -> Path:
    """The tiny model's transformer with other heads, saved as a new SentenceTransformer."""
    from sentence_transformers import SentenceTransformer

    base = SentenceTransformer(str(tiny_model_dir), device="cpu")
    SentenceTransformer(modules=[base[0], *heads], device="cpu").save(str(target))
    return target


@pytest.mark.parametrize("mode", ["cls", "max", "mean_sqrt_len_tokens", ("cls", "mean")])
def test_other_pooling_modes_export_faithfully(tiny_model_dir, tmp_path, mode):
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    model_dir = _tiny_variant(
        tiny_model_dir, tmp_path / "model", [Pooling(TINY_DIM, pooling_mode=mode), Normalize()]
    )
    result = export_run(model_dir, tmp_path / "onnx", int8=False)
    assert result.graphs[0].parity.min_cosine >= 0.9999
    assert result.spec.pooling == ((mode,) if isinstance(mode, str) else mode)


def test_dense_head_without_normalize_exports_unit_vectors(tiny_model_dir, tmp_path):
    import torch
    from sentence_transformers.base.modules import Dense
    from sentence_transformers.sentence_transformer.modules import Pooling

    torch.manual_seed(1)
    heads = [Pooling(TINY_DIM), Dense(TINY_DIM, 24, activation_function=torch.nn.Tanh())]
    model_dir = _tiny_variant(tiny_model_dir, tmp_path / "model", heads)
    result = export_run(model_dir, tmp_path / "onnx", dims=[24, 12], int8=False)
    assert result.spec.full_dim == 24 and not result.spec.normalize
    output = run_graph(tmp_path / "onnx" / "d12" / "model.onnx", model_dir, TEXTS)
    np.testing.assert_allclose(np.linalg.norm(output, axis=1), 1.0, atol=1e-5)
    assert (output * reference(model_dir, TEXTS, 12)).sum(axis=1).min() >= 0.9999


def test_unsupported_modules_are_refused_with_what_was_found(tiny_model_dir, tmp_path):
    from sentence_transformers.sentence_transformer.modules import Dropout, Pooling

    model_dir = _tiny_variant(tiny_model_dir, tmp_path / "model", [Pooling(TINY_DIM), Dropout(0.1)])
    with pytest.raises(
        ExportError,
        match=r"module 2 is Dropout \(modules: Transformer -> Pooling -> Dropout\); "
        r"supported: Transformer -> Pooling -> \(Dense \| Normalize\)\*",
    ):
        export_run(model_dir, tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()


def test_unsupported_pooling_mode_is_refused(tiny_model_dir):
    # Every mode sentence-transformers has today exports; a mode added later must be refused, not guessed.
    from sentence_transformers import SentenceTransformer

    from training.export.onnx_graph import inspect_model

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    model[1].pooling_mode = "attention"
    with pytest.raises(ExportError, match=r"pooling mode \['attention'\] is not supported"):
        inspect_model(model, tiny_model_dir)


def test_default_prompt_is_refused(tiny_model_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(
        str(tiny_model_dir), device="cpu", prompts={"query": "query: "}, default_prompt_name="query"
    )
    model.save(str(tmp_path / "model"))
    with pytest.raises(ExportError, match=r"prepends the default prompt 'query: '"):
        export_run(tmp_path / "model", tmp_path / "onnx")


@pytest.mark.slow
def test_minilm_export_parity(minilm_dir, tmp_path):
    result = export_run(minilm_dir, tmp_path / "onnx", dims=[384, 64])
    for dim in (384, 64):
        fp32, int8 = result.graph(dim, "fp32"), result.graph(dim, "int8")
        assert fp32.parity.min_cosine >= 0.9999 and fp32.parity.max_abs_diff < 1e-5
        # Measured 0.962-0.968 min and 0.990-0.991 mean over dims 384..64 (per-channel, MatMul + Gather).
        assert int8.parity.min_cosine >= 0.95 and int8.parity.mean_cosine >= 0.985
        assert int8.size_bytes < fp32.size_bytes / 3
    tokens = json.loads((tmp_path / "onnx" / "tokenizer" / "tokenizer.json").read_text())["truncation"]
    assert tokens["max_length"] == 256  # not the 128 in MiniLM's own tokenizer.json
