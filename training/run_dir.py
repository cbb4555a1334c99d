"""The run directory: one folder per run, immutable once written (GUIDE.md section 3).

artifacts/runs/<run_id>/
  config.yaml            the resolved config        data/report.json, data/docs/   the data gate
  mined/                 mined hard negatives       model/                        SentenceTransformer (safetensors)
  train/train_log.jsonl, train/loss_curve.png, train/checkpoints/
  onnx/d{dim}/model.onnx (+ model_int8.onnx, model_fp16.onnx), onnx/tokenizer/, onnx/export.json
  eval/  gate/decision.json  manifest.json
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from training.errors import ConfigError


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def run_id(self) -> str:
        return self.root.name

    config = property(lambda self: self.root / "config.yaml")
    data = property(lambda self: self.root / "data")
    mined = property(lambda self: self.root / "mined")
    model = property(lambda self: self.root / "model")
    train = property(lambda self: self.root / "train")
    train_log = property(lambda self: self.root / "train" / "train_log.jsonl")
    loss_curve = property(lambda self: self.root / "train" / "loss_curve.png")
    checkpoints = property(lambda self: self.root / "train" / "checkpoints")
    onnx = property(lambda self: self.root / "onnx")
    eval = property(lambda self: self.root / "eval")
    gate = property(lambda self: self.root / "gate")
    manifest = property(lambda self: self.root / "manifest.json")


def new_run_id(config_payload: dict) -> str:
    """`<UTC time>-<config hash>`. Under torchrun every rank must agree, so the launcher's run id replaces time."""
    digest = hashlib.sha256(json.dumps(config_payload, sort_keys=True, default=str).encode()).hexdigest()[:8]
    launcher = os.environ.get("TORCHELASTIC_RUN_ID")
    stamp = (
        f"ddp{hashlib.sha256(launcher.encode()).hexdigest()[:6]}"
        if launcher
        else time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    )
    return f"{stamp}-{digest}"


def create_run_dir(output_dir: Path, run_id: str, *, shared: bool = False) -> RunPaths:
    """Create a new run folder; an existing one is never reused (runs are immutable). `shared`: DDP ranks."""
    root = Path(output_dir) / run_id
    if root.exists() and not shared:
        raise ConfigError(
            f"run directory {root} already exists and runs are immutable; choose another run_id, "
            f"or pass --resume {root} to continue an interrupted run"
        )
    root.mkdir(parents=True, exist_ok=shared)
    return RunPaths(root)


def new_run_dir(config) -> RunPaths:
    """The one way a run directory is created for a TrainConfig: its `run_id`, else `<UTC time>-<config hash>`.
    Under torchrun (WORLD_SIZE > 1) every rank gets the same folder; only rank 0 writes files into it."""
    shared = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return create_run_dir(
        config.output_dir, config.run_id or new_run_id(config.to_yaml_dict()), shared=shared
    )


def open_run_dir(path: str | Path) -> RunPaths:
    root = Path(path)
    if not (root / "config.yaml").is_file():
        raise ConfigError(
            f"{root} is not an embedgate run directory (no config.yaml); expected a folder under "
            f"artifacts/runs/ created by `embedgate train` or `embedgate pipeline`"
        )
    return RunPaths(root)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, payload) -> None:
    """Write JSON through a temp file in the same folder + fsync + os.replace (+ fsync of the folder): readers never
    see half a file, and a crash after return keeps the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=False, default=str)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
