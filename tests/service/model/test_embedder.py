"""The ONNX embedder runtime: what it returns, how it batches, what it refuses, and that it needs no torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.errors import EmbedRequestError, ModelLoadError, TextTooLongError
from service.model.embedder import OnnxEmbedder
from tests.conftest import TINY_DIM
from training.data.probe_texts import LONG_TEXT, PROBE_TEXTS
from training.export.export_run import export_run

DIMS = [TINY_DIM, 16, 8]
TEXTS = [
    "the patient took the tablet twice a day",
    "lease",
    "Der Mieter zahlt die Miete.",
    "heart",
    "what is the risk of liver cancer after the trial",
    LONG_TEXT,
    "42 mg",
    "contract",
]


@pytest.fixture(scope="module")
def export_dir(tiny_model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("embedder") / "onnx"
    export_run(tiny_model_dir, out, dims=DIMS)
    return out


@pytest.fixture(scope="module")
def embedder(export_dir) -> OnnxEmbedder:
    return OnnxEmbedder.from_export_dir(export_dir, threads=1)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_embeddings_match_the_sentence_transformer(embedder, tiny_model_dir):
    """End to end through `tokenizers` (not transformers), including truncation of the long text."""
    from sentence_transformers import SentenceTransformer

    expected = SentenceTransformer(str(tiny_model_dir), device="cpu").encode(TEXTS, convert_to_numpy=True)
    assert cosines(embedder.embed(TEXTS), expected).min() >= 0.9999


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("dim", DIMS)
def test_vectors_are_float32_unit_length_finite_and_the_asked_size(export_dir, precision, dim):
    vectors = OnnxEmbedder.from_export_dir(export_dir, precision=precision).embed(TEXTS, dimensions=dim)
    assert vectors.shape == (len(TEXTS), dim) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("dim", DIMS[1:])
def test_slicing_the_full_graph_equals_the_per_dim_graph(export_dir, precision, dim):
    full = OnnxEmbedder.from_export_dir(export_dir, precision=precision)
    per_dim = OnnxEmbedder.from_export_dir(export_dir, precision=precision, dim=dim)
    file_name = "model.onnx" if precision == "fp32" else "model_int8.onnx"
    bare = OnnxEmbedder.from_graph(export_dir / f"d{dim}" / file_name, export_dir / "tokenizer")
    sliced = full.embed(TEXTS, dimensions=dim)
    assert per_dim.graph_dim == bare.graph_dim == dim
    np.testing.assert_allclose(sliced, per_dim.embed(TEXTS), atol=1e-6)
    np.testing.assert_allclose(sliced, bare.embed(TEXTS), atol=1e-6)
    # The slice alone is not enough: without re-normalising it would not be unit length.
    raw_slice = full.embed(TEXTS)[:, :dim]
    assert np.abs(np.linalg.norm(raw_slice, axis=1) - 1).max() > 1e-3


@pytest.mark.parametrize("optimization", ["none", "basic", "extended"])
def test_every_optimization_level_gives_the_same_vectors(embedder, export_dir, optimization):
    other = OnnxEmbedder.from_export_dir(export_dir, optimization=optimization)
    np.testing.assert_allclose(other.embed(TEXTS), embedder.embed(TEXTS), atol=1e-5)


def test_per_dim_graph_serves_the_exported_dims_it_covers(export_dir):
    embedder = OnnxEmbedder.from_export_dir(export_dir, dim=16)
    assert embedder.dims == (16, 8) and embedder.full_dim == TINY_DIM
    assert embedder.embed(["heart"], dimensions=8).shape == (1, 8)


def test_order_is_preserved_and_duplicates_are_equal(embedder):
    texts = [
        LONG_TEXT,
        "a",
        "kidney liver lung",
        "a",
        "the tenant and the landlord signed the lease",
        LONG_TEXT,
    ]
    together = embedder.embed(texts, batch_size=2)
    alone = np.vstack([embedder.embed([text]) for text in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(together[1], together[3], atol=1e-6)
    np.testing.assert_allclose(together[0], together[5], atol=1e-6)
    assert cosines(together[[1]], together[[2]])[0] < 0.9999  # different texts, different vectors


def test_batches_are_sorted_by_length_to_minimise_padding(export_dir):
    embedder = OnnxEmbedder.from_export_dir(export_dir)
    widths = []
    session = embedder._session

    class RecordingSession:
        def run(self, names, feeds):
            widths.append(feeds["input_ids"].shape)
            return session.run(names, feeds)

    embedder._session = RecordingSession()
    embedder.embed([LONG_TEXT, "heart", LONG_TEXT, "lease"], batch_size=2)
    assert widths == [(2, 3), (2, 64)]


def test_tokenize_reports_counts_and_truncation(embedder):
    at_limit, over_limit = " ".join(["heart"] * 62), " ".join(["heart"] * 63)
    batch = embedder.tokenize(["heart", at_limit, over_limit, LONG_TEXT])
    assert batch.truncated == (False, False, True, True)
    assert batch.token_counts[:3] == (3, 64, 65) and batch.token_counts[3] > 100
    assert batch.input_ids.shape == (4, 64) and batch.input_ids.dtype == np.int64
    assert batch.attention_mask.sum(axis=1).tolist() == [3, 64, 64, 64]
    assert embedder.count_tokens(["heart", over_limit, LONG_TEXT]) == (3, 65, batch.token_counts[3])
    assert batch.to_dict()["truncated"] == [False, False, True, True]


def test_truncate_false_names_the_text_that_is_too_long(embedder):
    (count,) = embedder.count_tokens([LONG_TEXT])
    message = rf"text 1 has {count} tokens; the model takes at most 64 tokens .* truncation is off"
    with pytest.raises(TextTooLongError, match=message):
        embedder.tokenize(["heart", LONG_TEXT], truncate=False)
    with pytest.raises(TextTooLongError, match=message):
        embedder.embed(["heart", LONG_TEXT], truncate=False)
    assert embedder.embed(["heart"], truncate=False).shape == (1, TINY_DIM)


@pytest.mark.parametrize("dimensions", [0, -1, 7, 33, 64, "16", 16.0, True])
def test_unserved_dimensions_are_refused_listing_the_allowed(embedder, dimensions):
    with pytest.raises(
        EmbedRequestError,
        match=rf"dimensions {dimensions!r} is not served by this model; "
        rf"allowed: \[32, 16, 8\]",
    ):
        embedder.embed(["heart"], dimensions=dimensions)


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ("heart", r"texts: expected a list of strings, got str 'heart'; wrap a single text in a list"),
        (["heart", 3], r"texts\[1\]: expected a string, got int 3"),
        ([None], r"texts\[0\]: expected a string, got NoneType None"),
        (None, r"texts: expected a list of strings, got NoneType"),
    ],
)
def test_texts_that_are_not_a_list_of_strings_are_refused(embedder, texts, message):
    with pytest.raises(EmbedRequestError, match=message):
        embedder.embed(texts)


def test_bad_batch_size_is_refused(embedder):
    with pytest.raises(EmbedRequestError, match=r"batch_size: expected an integer >= 1, got 0"):
        embedder.embed(["heart"], batch_size=0)


def test_no_texts_give_an_empty_matrix(embedder):
    assert embedder.embed([], dimensions=8).shape == (0, 8)


def test_info_carries_the_export_identity(embedder, export_dir):
    config = json.loads((export_dir / "embedder.json").read_text())
    info = embedder.info.to_dict()
    assert info["export_id"] == config["export_id"] and info["created_at"] == config["created_at"]
    assert info["graph_sha256"] == config["graphs"]["32"]["fp32"]["sha256"]
    assert info["source_model_sha256"] == config["source_model"]["sha256"]
    assert (info["precision"], info["dims"], info["max_seq_length"], info["threads"]) == (
        "fp32",
        (32, 16, 8),
        64,
        1,
    )
    assert info["optimization"] == "all"


def test_export_dir_errors(export_dir, tmp_path):
    with pytest.raises(ModelLoadError, match=r"embedder.json not found: .* is not an embedgate export"):
        OnnxEmbedder.from_export_dir(tmp_path)
    with pytest.raises(ModelLoadError, match=r"precision 'int4' is not in the export .* \['fp32', 'int8'\]"):
        OnnxEmbedder.from_export_dir(export_dir, precision="int4")
    with pytest.raises(ModelLoadError, match=r"dim 12 has no graph in the export .* \[32, 16, 8\]"):
        OnnxEmbedder.from_export_dir(export_dir, dim=12)
    with pytest.raises(ModelLoadError, match=r"threads: expected an integer >= 1 .* got 0"):
        OnnxEmbedder.from_export_dir(export_dir, threads=0)
    with pytest.raises(
        ModelLoadError,
        match=r"optimization: expected one of \['none', 'basic', 'extended', "
        r"'all'\], got 'O3'",
    ):
        OnnxEmbedder.from_export_dir(export_dir, optimization="O3")


def test_fp32_only_export_has_no_int8(tiny_model_dir, tmp_path):
    export_run(tiny_model_dir, tmp_path / "onnx", int8=False)
    with pytest.raises(
        ModelLoadError, match=r"precision 'int8' is not in the export .*\['fp32'\].*--no-int8"
    ):
        OnnxEmbedder.from_export_dir(tmp_path / "onnx", precision="int8")


def test_changed_graph_file_fails_the_sha256_check(export_dir, tmp_path):
    copy = tmp_path / "onnx"
    shutil.copytree(export_dir, copy)
    with (copy / "d32" / "model.onnx").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelLoadError, match=r"d32/model.onnx: sha256 .* does not match embedder.json"):
        OnnxEmbedder.from_export_dir(copy)


def test_unknown_format_version_is_refused(export_dir, tmp_path):
    copy = tmp_path / "onnx"
    shutil.copytree(export_dir, copy)
    config = json.loads((copy / "embedder.json").read_text())
    (copy / "embedder.json").write_text(json.dumps({**config, "format_version": 2}))
    with pytest.raises(ModelLoadError, match=r"format_version 2, this runtime reads 1"):
        OnnxEmbedder.from_export_dir(copy)


def test_an_embedder_json_without_the_graph_entry_is_refused(export_dir, tmp_path):
    copy = tmp_path / "onnx"
    shutil.copytree(export_dir, copy)
    config = json.loads((copy / "embedder.json").read_text())
    del config["graphs"]["32"]["int8"]
    (copy / "embedder.json").write_text(json.dumps(config))
    with pytest.raises(
        ModelLoadError, match=r"embedder.json: no usable graphs entry for dim 32 int8 \(missing 'int8'\)"
    ):
        OnnxEmbedder.from_export_dir(copy, precision="int8")


def _toy_graph(
    path: Path,
    inputs=(("input_ids", "int64"), ("attention_mask", "int64")),
    outputs=(("sentence_embedding", 4),),
) -> Path:
    """A tiny valid ONNX graph: every output = (number of real tokens) * ones(dim); a dim given as a name makes
    the output the float mask itself, whose width varies with the input (onnxruntime infers fixed widths)."""
    import onnx
    from onnx import TensorProto, helper

    types = {"int64": TensorProto.INT64, "float": TensorProto.FLOAT}
    graph_inputs = [
        helper.make_tensor_value_info(name, types[kind], ["batch", "sequence"]) for name, kind in inputs
    ]
    nodes = [
        helper.make_node("Cast", [inputs[-1][0]], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["mask", "axis"], ["length"], keepdims=1),
    ]
    initializers = [helper.make_tensor("axis", TensorProto.INT64, [1], [1])]
    graph_outputs = []
    for name, dim in outputs:
        if isinstance(dim, str):
            nodes.append(helper.make_node("Identity", ["mask"], [name]))
        else:
            initializers.append(helper.make_tensor(f"ones_{name}", TensorProto.FLOAT, [1, dim], [1.0] * dim))
            nodes.append(helper.make_node("Mul", ["length", f"ones_{name}"], [name]))
        graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", dim]))
    graph = helper.make_graph(nodes, "toy", graph_inputs, graph_outputs, initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_graph_that_meets_the_contract_loads(export_dir, tmp_path):
    embedder = OnnxEmbedder.from_graph(
        _toy_graph(tmp_path / "ok.onnx"), export_dir / "tokenizer", dims=[4, 2]
    )
    assert embedder.dims == (4, 2) and embedder.max_seq_length == 64
    np.testing.assert_allclose(embedder.embed(["heart"], dimensions=2), [[0.5**0.5, 0.5**0.5]], atol=1e-6)


@pytest.mark.parametrize(
    ("graph", "problem"),
    [
        ({"inputs": (("ids", "int64"), ("attention_mask", "int64"))}, "wrong input names"),
        (
            {"inputs": (("input_ids", "int64"), ("attention_mask", "int64"), ("token_type_ids", "int64"))},
            "wrong input names",
        ),
        ({"inputs": (("input_ids", "float"), ("attention_mask", "int64"))}, "inputs must be int64 and 2-d"),
        ({"outputs": (("embedding", 4),)}, "expected exactly one output named 'sentence_embedding'"),
        ({"outputs": (("sentence_embedding", 4), ("token_embeddings", 4))}, "expected exactly one output"),
        ({"outputs": (("sentence_embedding", "dim"),)}, "the output's second axis must have a fixed size"),
    ],
)
def test_graphs_that_break_the_contract_are_refused(export_dir, tmp_path, graph, problem):
    path = _toy_graph(tmp_path / "bad.onnx", **graph)
    with pytest.raises(
        ModelLoadError,
        match=rf"bad.onnx: graph does not match the embedder contract "
        rf"\({problem}.*\): expected inputs input_ids and attention_mask",
    ):
        OnnxEmbedder.from_graph(path, export_dir / "tokenizer")


def test_a_file_that_is_not_onnx_is_refused(export_dir, tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"this is not a protobuf")
    with pytest.raises(ModelLoadError, match=r"model.onnx: not a loadable ONNX graph"):
        OnnxEmbedder.from_graph(tmp_path / "model.onnx", export_dir / "tokenizer")
    with pytest.raises(ModelLoadError, match=r"missing.onnx: graph file not found"):
        OnnxEmbedder.from_graph(tmp_path / "missing.onnx", export_dir / "tokenizer")
    with pytest.raises(ModelLoadError, match=r"tokenizer.json: tokenizer file not found"):
        OnnxEmbedder.from_graph(export_dir / "d8" / "model.onnx", tmp_path)


def test_from_graph_rejects_dims_larger_than_the_graph(export_dir):
    with pytest.raises(ModelLoadError, match=r"each must be an integer in 1\.\.16 .* bad: \[32\]"):
        OnnxEmbedder.from_graph(export_dir / "d16" / "model.onnx", export_dir / "tokenizer", dims=[32, 16])
    with pytest.raises(ModelLoadError, match=r"dims \[16, '8'\]: each must be .* bad: \['8'\]"):
        OnnxEmbedder.from_graph(export_dir / "d16" / "model.onnx", export_dir / "tokenizer", dims=[16, "8"])


def test_the_runtime_imports_no_torch_or_transformers():
    code = (
        "import service.model.embedder, service.model.tokenization, sys; "
        "bad = [m for m in ('torch', 'transformers', 'sentence_transformers', 'training', 'gates') "
        "if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[3])


@pytest.fixture(scope="module")
def minilm_export(minilm_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("minilm") / "onnx"
    export_run(minilm_dir, out, dims=[384, 128])
    return out


@pytest.mark.slow
def test_minilm_runtime_matches_sentence_transformers(minilm_export, minilm_dir):
    from sentence_transformers import SentenceTransformer

    texts = list(PROBE_TEXTS)
    expected = SentenceTransformer(str(minilm_dir), device="cpu").encode(texts, convert_to_numpy=True)
    fp32 = OnnxEmbedder.from_export_dir(minilm_export).embed(texts, batch_size=8)
    int8 = OnnxEmbedder.from_export_dir(minilm_export, precision="int8").embed(texts, batch_size=8)
    assert cosines(fp32, expected).min() >= 0.9999
    assert cosines(int8, expected).mean() >= 0.985 and cosines(int8, expected).min() >= 0.95
    assert OnnxEmbedder.from_export_dir(minilm_export).tokenize([LONG_TEXT]).truncated == (True,)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_minilm_slice_equals_the_128_graph(minilm_export, precision):
    full = OnnxEmbedder.from_export_dir(minilm_export, precision=precision)
    per_dim = OnnxEmbedder.from_export_dir(minilm_export, precision=precision, dim=128)
    np.testing.assert_allclose(
        full.embed(list(PROBE_TEXTS), dimensions=128), per_dim.embed(list(PROBE_TEXTS)), atol=1e-5
    )
