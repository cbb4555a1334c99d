"""Which onnxruntime execution provider serves a graph: `cpu` (the default), `cuda[:N]` or `auto`.

    EMBEDGATE_DEVICE=cuda:0 embedgate serve ...      # needs onnxruntime-gpu (pip install 'embedgate[gpu]')

`service` may not import `training`, so this parses the same small grammar as training/device.py (torch's side)
on its own; both name the setting and the fix in their errors.
"""

from __future__ import annotations

import os
import re

from service.errors import ModelLoadError

ENV = "EMBEDGATE_DEVICE"
PATTERN = re.compile(r"^(auto|cpu|cuda(?::(\d+))?)$")


def requested_device(device: str | None = None) -> str:
    """`device`, else $EMBEDGATE_DEVICE, else cpu (serving stays on the CPU unless asked)."""
    value = (device if device is not None else os.environ.get(ENV, "cpu")).strip().lower()
    if not PATTERN.match(value):
        raise ModelLoadError(
            f"device {value!r}: expected auto, cpu, cuda or cuda:N (e.g. cuda:0); set it in the "
            f"config, with --set device=..., or ${ENV}"
        )
    return value


def onnx_providers(device: str | None = None) -> list:
    """onnxruntime providers for `device`: CUDA first (CPU kept for the ops CUDA lacks) when asked and installed.
    `auto` uses CUDA when onnxruntime offers it; `cuda` where it does not is an error, not a silent CPU run."""
    import onnxruntime as ort

    value = requested_device(device)
    available = ort.get_available_providers()
    if value == "cpu" or (value == "auto" and "CUDAExecutionProvider" not in available):
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        raise ModelLoadError(
            f"device {value!r} asked for onnxruntime's CUDA provider, but this onnxruntime has "
            f"only {available}: install the GPU build (pip install 'embedgate[gpu]', which "
            f"brings onnxruntime-gpu) or set device to cpu/auto"
        )
    match = PATTERN.match(value)
    index = int(match.group(2)) if match and match.group(2) else 0
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
