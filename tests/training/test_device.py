"""`device: auto | cpu | cuda[:N]`: what torch and onnxruntime get, and the one-line errors when it cannot be had.
The CUDA branches are exercised with torch's CUDA queries patched (no GPU on the CI machines)."""

from __future__ import annotations

import pytest

from service.errors import ModelLoadError
from service.model.devices import onnx_providers
from training.device import DeviceError, resolve_device


@pytest.fixture()
def no_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture()
def two_gpus(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Test GPU")


def test_cpu_is_cpu_without_mixed_precision():
    device = resolve_device("cpu")
    assert device.name == "cpu" and not device.is_cuda and device.autocast() is None and device.note == ""


def test_auto_falls_back_to_the_cpu_and_says_so(no_gpu, monkeypatch):
    monkeypatch.delenv("EMBEDGATE_DEVICE", raising=False)
    device = resolve_device(None)
    assert device.name == "cpu" and device.requested == "auto"
    assert device.note == "device auto: no CUDA GPU visible to torch, running on the CPU"


def test_auto_takes_the_first_gpu(two_gpus):
    device = resolve_device("auto")
    assert device.name == "cuda:0" and device.is_cuda and "Test GPU" in device.note


def test_cuda_index_is_kept_and_checked(two_gpus):
    assert resolve_device("CUDA:1").name == "cuda:1"
    with pytest.raises(
        DeviceError, match=r"device 'cuda:2': only 2 CUDA GPU\(s\) visible \(cuda:0..cuda:1\)"
    ):
        resolve_device("cuda:2")


def test_cuda_without_a_gpu_is_a_one_line_error(no_gpu):
    with pytest.raises(
        DeviceError, match=r"device 'cuda': torch .* sees no CUDA GPU; install a CUDA build"
    ) as err:
        resolve_device("cuda")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cuda:", "mps", ""])
def test_unknown_device_names_say_what_is_allowed(bad):
    with pytest.raises(DeviceError, match="expected auto, cpu, cuda or cuda:N"):
        resolve_device(bad)


def test_the_environment_variable_is_the_default(monkeypatch):
    monkeypatch.setenv("EMBEDGATE_DEVICE", "cpu")
    assert resolve_device(None).requested == "cpu"
    assert resolve_device("auto").requested == "auto"  # an explicit setting wins


def test_onnxruntime_providers(monkeypatch):
    import onnxruntime as ort

    monkeypatch.delenv("EMBEDGATE_DEVICE", raising=False)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert onnx_providers(None) == ["CPUExecutionProvider"]  # serving stays on the CPU unless asked
    assert onnx_providers("auto") == ["CPUExecutionProvider"]
    with pytest.raises(
        ModelLoadError,
        match=r"device 'cuda:0' asked for onnxruntime's CUDA provider, but this "
        r"onnxruntime has only \['CPUExecutionProvider'\]: install the GPU",
    ):
        onnx_providers("cuda:0")
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert onnx_providers("cuda:1") == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert onnx_providers("auto")[0] == ("CUDAExecutionProvider", {"device_id": 0})
    monkeypatch.setenv("EMBEDGATE_DEVICE", "cpu")
    assert onnx_providers(None) == ["CPUExecutionProvider"]
    with pytest.raises(ModelLoadError, match="expected auto, cpu, cuda or cuda:N"):
        onnx_providers("tpu")


def test_mixed_precision_follows_the_gpu(two_gpus, monkeypatch):
    import torch

    from training.device import ResolvedDevice

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert ResolvedDevice("cuda:0", "cuda").autocast() == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert ResolvedDevice("cuda:0", "cuda").autocast() == "fp16"
