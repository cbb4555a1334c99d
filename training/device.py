"""Where torch runs: `device: auto | cpu | cuda | cuda:N` (config, `--set device=...`, or $EMBEDGATE_DEVICE).

    resolve_device("auto")   # -> ResolvedDevice("cuda:0", ...) with a GPU, else ("cpu", "no CUDA GPU: ... CPU")

`auto` takes the first CUDA GPU when torch sees one and falls back to the CPU, saying so; asking for `cuda` where
there is none is an error (a one-line message), never a silent CPU run. Mixed precision follows the GPU: bf16 where
it is supported (Ampere and later), else fp16; none on the CPU.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from training.errors import ConfigError

ENV = "EMBEDGATE_DEVICE"
PATTERN = re.compile(r"^(auto|cpu|cuda(?::(\d+))?)$")


class DeviceError(ConfigError):
    """The configured device cannot be used here."""


@dataclass(frozen=True)
class ResolvedDevice:
    name: str  # "cpu" or "cuda:N": what torch gets
    requested: str
    note: str = ""  # why this device (auto's choice), for the progress output

    @property
    def is_cuda(self) -> bool:
        return self.name.startswith("cuda")

    def autocast(self) -> str | None:
        """'bf16', 'fp16' or None: the mixed precision the Trainer should use on this device."""
        if not self.is_cuda:
            return None
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def requested_device(setting: str | None = None) -> str:
    """The setting, else $EMBEDGATE_DEVICE, else auto; checked against the grammar."""
    value = (setting if setting is not None else os.environ.get(ENV, "auto")).strip().lower()
    if not PATTERN.match(value):
        raise DeviceError(
            f"device {value!r}: expected auto, cpu, cuda or cuda:N (e.g. cuda:0); set it in the "
            f"config, with --set device=..., or ${ENV}"
        )
    return value


def resolve_device(setting: str | None = None) -> ResolvedDevice:
    value = requested_device(setting)
    if value == "cpu":
        return ResolvedDevice("cpu", value)
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if value == "auto":
        if count:
            return ResolvedDevice(
                "cuda:0", value, f"device auto: using cuda:0 ({torch.cuda.get_device_name(0)})"
            )
        return ResolvedDevice("cpu", value, "device auto: no CUDA GPU visible to torch, running on the CPU")
    index = int(PATTERN.match(value).group(2) or 0)
    if not count:
        raise DeviceError(
            f"device {value!r}: torch {torch.__version__} sees no CUDA GPU; install a CUDA build "
            f"(pip install 'embedgate[gpu]', see docs/performance.md) on a machine with a GPU, or "
            f"set device: cpu (or auto)"
        )
    if index >= count:
        raise DeviceError(
            f"device {value!r}: only {count} CUDA GPU(s) visible (cuda:0..cuda:{count - 1}); pick "
            f"one of those or set device: auto"
        )
    return ResolvedDevice(f"cuda:{index}", value)
