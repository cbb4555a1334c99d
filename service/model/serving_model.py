"""A registry version made ready to serve: manifest verified, ONNX graph loaded, warm-up embed checked.

    model = load_version(Path("registry/versions/v0002"), precision=None, threads=None)
    model.version, model.serving_dim, model.embedder.embed(["text"], dimensions=model.serving_dim)

The same loader serves a registry version folder and a BentoML model store folder (a copy of one, plus the
model.yaml BentoML writes beside it). Only JSON, tokenizer.json and ONNX files are read: nothing is unpickled and
no model code is executed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import ModelLoadError
from service.model.embedder import OnnxEmbedder
from service.registry.object_registry import fetched_dir
from service.registry.registry import MANIFEST, Registry, verify_manifest

WARM_UP_TEXT = "embedgate warm-up: a short sentence to run the graph once before serving."
# BentoML's model store keeps its own record beside the files it was given.
BENTO_STORE_FILES = frozenset({"model.yaml"})
# What serving a version reads besides its graph: the export's json and tokenizer, the gate's decision, the drift
# reference. Not the other graphs (every exported dim, fp32 and int8): the service runs the full-dim graph of one
# precision and truncates it to any dim.
SERVING_PARTS = ("onnx/embedder.json", "onnx/export.json", "onnx/tokenizer/", "decision.json", "reference/")


@dataclass(frozen=True)
class ServingModel:
    """One loaded version. Immutable: a hot swap replaces the whole object, never its parts."""

    version: str
    embedder: OnnxEmbedder
    serving_dim: int
    precision: str
    source: str
    run_id: str | None
    loaded_at: str
    warm_up_ms: float

    @property
    def dims(self) -> tuple[int, ...]:
        return self.embedder.dims

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "source": self.source,
            "run_id": self.run_id,
            "serving_dim": self.serving_dim,
            "dims": list(self.dims),
            "precision": self.precision,
            "max_tokens": self.embedder.max_seq_length,
            "full_dim": self.embedder.full_dim,
            "loaded_at": self.loaded_at,
            "warm_up_ms": round(self.warm_up_ms, 2),
            "graph_sha256": self.embedder.info.graph_sha256,
            "prompts": self.embedder.info.prompts or {},
        }


def serving_files(registry: Registry, version: str, precision: str | None) -> Path:
    """The version's folder holding what `load_version` and the drift monitor read: on object storage only those
    files are fetched and sha256-verified (MiniLM, fp32: 91 MB of the version's 454 MB), the graph at `precision` (None:
    the version's serve_precision, else fp32) named by embedder.json. A graph it does not name is left to
    `load_version`, which says what the export holds."""
    root = fetched_dir(registry, version, SERVING_PARTS)
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
        config = json.loads((root / "onnx" / "embedder.json").read_text(encoding="utf-8"))
        precision = precision or manifest.get("serve_precision") or "fp32"
        graph = config["graphs"][str(config["full_dim"])][precision]["path"]
    except (OSError, ValueError, KeyError, TypeError):
        return root
    return fetched_dir(registry, version, (*SERVING_PARTS, f"onnx/{graph}"))


def load_version(
    version_dir: Path,
    *,
    precision: str | None,
    threads: int | None,
    source: str | None = None,
    ignore_files: frozenset[str] = frozenset(),
) -> ServingModel:
    """Verify every file against manifest.json (RegistryError), load the graph and warm it up (ModelLoadError)."""
    version_dir = Path(version_dir)
    manifest = verify_manifest(version_dir, ignore=ignore_files)
    precision = precision or manifest.get("serve_precision") or "fp32"
    # The manifest just verified every graph's sha256, so the embedder need not hash them a second time. Idle
    # onnxruntime threads sleep rather than spin: the event loop serving HTTP needs those cores between batches.
    embedder = OnnxEmbedder.from_export_dir(
        version_dir / "onnx", precision=precision, threads=threads, verify_sha256=False, allow_spinning=False
    )
    return ready_model(
        str(manifest.get("version") or version_dir.name),
        embedder,
        manifest.get("serving_dim") or embedder.dims[0],
        precision,
        source or str(version_dir),
        manifest.get("run_id"),
        f"{version_dir}: manifest serving_dim",
    )


def ready_model(
    version: str,
    embedder: OnnxEmbedder,
    serving_dim: int,
    precision: str,
    source: str,
    run_id: str | None,
    what: str,
) -> ServingModel:
    """A loaded graph made servable: its serving dim checked against its dims (`what` names where that dim came
    from, for the error), warmed up."""
    if serving_dim not in embedder.dims:
        raise ModelLoadError(
            f"{what} {serving_dim!r} is not among the exported dims {list(embedder.dims)}; promote the "
            f"version again with a served dim"
        )
    return ServingModel(
        version=version,
        embedder=embedder,
        serving_dim=serving_dim,
        precision=precision,
        source=source,
        run_id=run_id,
        loaded_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        warm_up_ms=warm_up(embedder, serving_dim),
    )


def warm_up(embedder: OnnxEmbedder, serving_dim: int) -> float:
    """Embed once at every served dim and check the vectors; returns the first run's milliseconds."""
    import numpy as np

    started = time.perf_counter()
    full = embedder.embed([WARM_UP_TEXT])
    elapsed_ms = (time.perf_counter() - started) * 1e3
    norm = float(np.linalg.norm(full[0]))
    if full.shape != (1, embedder.dims[0]) or not np.isfinite(full).all() or abs(norm - 1.0) > 1e-3:
        raise ModelLoadError(
            f"{embedder.info.graph_path}: warm-up embed gave shape {full.shape}, norm {norm:.4f}; "
            f"expected (1, {embedder.dims[0]}) with unit norm: the graph is broken, re-export"
        )
    served = embedder.embed([WARM_UP_TEXT], dimensions=serving_dim)
    if served.shape != (1, serving_dim):
        raise ModelLoadError(f"warm-up at serving_dim {serving_dim} gave shape {served.shape}")
    return elapsed_ms
