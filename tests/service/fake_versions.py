"""Registry versions without a model, for the registry tests on a folder and on object storage: an export-shaped
folder (one graph file and embedder.json) and its promotion."""

from __future__ import annotations

import json
from pathlib import Path

from service.registry.registry import Registry


def fake_export(tmp_path: Path, name: str, payload: bytes = b"graph") -> Path:
    src = tmp_path / name
    (src / "d32").mkdir(parents=True)
    (src / "d32" / "model.onnx").write_bytes(payload)
    (src / "embedder.json").write_text(json.dumps({"dims": [32]}))
    return src


def promote_export(reg: Registry, src: Path, **kw) -> str:
    return reg.add_version({"onnx": src}, metadata={"serving_dim": 32}, who="tester", reason="test", **kw)
