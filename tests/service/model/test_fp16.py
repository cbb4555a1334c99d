"""Serving an fp16 export: asked for by precision, verified like every graph, and what the CPU provider does."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from service.errors import ModelLoadError, RegistryError
from service.model.embedder import OnnxEmbedder
from service.model.serving_model import load_version
from service.registry.registry import Registry
from service.settings import ServeSettings, SettingsError
from tests.service.serving import TINY_DIMS

TEXTS = ["the patient took the tablet twice a day", "lease", "heart", "what is the risk of liver cancer"]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("dim", TINY_DIMS)
def test_cpu_provider_serves_fp16_close_to_fp32(tiny_export_fp16, dim):
    # onnxruntime's CPU provider runs the fp16 graph (it casts around the ops it has no fp16 kernel for), so
    # EMBEDGATE_PRECISION=fp16 on a CPU machine works: same vectors within the export's parity bar, float32 out.
    half = OnnxEmbedder.from_export_dir(tiny_export_fp16, precision="fp16", device="cpu", threads=1)
    full = OnnxEmbedder.from_export_dir(tiny_export_fp16, precision="fp32", device="cpu", threads=1)
    assert half.info.precision == "fp16" and half.info.graph_path.endswith("model_fp16.onnx")
    a, b = half.embed(TEXTS, dimensions=dim), full.embed(TEXTS, dimensions=dim)
    assert a.dtype == np.float32 and a.shape == (len(TEXTS), dim)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert _cosines(a, b).min() >= 0.999


def test_fp16_asked_of_an_export_without_it_says_how_to_get_it(tiny_exports):
    with pytest.raises(ModelLoadError, match=r"precision 'fp16' is not in the export .*--fp16"):
        OnnxEmbedder.from_export_dir(tiny_exports["a"], precision="fp16")


def test_the_serving_setting_accepts_fp16_and_names_the_choices_otherwise():
    assert ServeSettings.from_env({"EMBEDGATE_PRECISION": "fp16"}).precision == "fp16"
    with pytest.raises(SettingsError, match=r"EMBEDGATE_PRECISION.*fp16"):
        ServeSettings.from_env({"EMBEDGATE_PRECISION": "bf16"})


def test_cuda_without_the_gpu_build_is_a_one_line_error(tiny_export_fp16):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(ModelLoadError, match=r"CUDA provider.*embedgate\[gpu\]") as raised:
        OnnxEmbedder.from_export_dir(tiny_export_fp16, precision="fp16", device="cuda")
    assert "\n" not in str(raised.value)


def test_registry_manifest_covers_the_fp16_graphs(tiny_export_fp16, tmp_path):
    registry = Registry(tmp_path / "registry")
    version = registry.add_version(
        {"onnx": tiny_export_fp16}, metadata={"serving_dim": 16}, who="tester", reason="fp16"
    )
    manifest = registry.verify(version)
    for dim in TINY_DIMS:
        assert f"onnx/d{dim}/model_fp16.onnx" in manifest["files"]
    served = load_version(registry.version_dir(version), precision="fp16", threads=1)
    assert served.precision == "fp16" and served.serving_dim == 16

    graph = registry.version_dir(version) / "onnx" / f"d{TINY_DIMS[0]}" / "model_fp16.onnx"
    data = bytearray(graph.read_bytes())
    data[-1] ^= 0xFF  # same size, one byte changed
    graph.chmod(0o644)
    graph.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="sha256 does not match the manifest"):
        load_version(registry.version_dir(version), precision="fp16", threads=1)


def test_the_embedder_verifies_the_fp16_sha256_outside_a_registry(tiny_export_fp16, tmp_path):
    copy = tmp_path / "onnx"
    shutil.copytree(tiny_export_fp16, copy)
    graph = copy / f"d{TINY_DIMS[0]}" / "model_fp16.onnx"
    data = bytearray(graph.read_bytes())
    data[-1] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="does not match embedder.json"):
        OnnxEmbedder.from_export_dir(copy, precision="fp16")
    assert json.loads((copy / "embedder.json").read_text())["graphs"][str(TINY_DIMS[0])]["fp16"]["path"]
