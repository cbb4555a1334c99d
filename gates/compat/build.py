"""Fit a run's backward map into an old version's space and export the compatible graph into the run:

    <run>/compat/<old version>/onnx/          candidate + map + truncation + L2, one graph per old dim, fp32 (+int8)
    <run>/compat/<old version>/backward_map.npy   the map itself (new_dim x old_dim), for the record
    <run>/compat/<old version>/compat.json    the fit and the evaluation (gates/compat/evaluate.py)

Both models embed the training pairs through their served graphs (fp32, full dim, each with its own prompts), so
the map is fitted on exactly what each version serves; the encodings go through the run's embedding cache, where
the evaluation already left the old version's and the candidate's corpus vectors."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gates.compat.data import CompatPairs
from training.run_dir import RunPaths


@dataclass(frozen=True)
class CompatBuild:
    old_version: str
    folder: Path  # <run>/compat/<old version>
    dims: tuple[int, ...]  # the old version's dims, largest first
    fit: dict

    @property
    def onnx(self) -> Path:
        return self.folder / "onnx"


def compat_folder(run: RunPaths, old_version: str) -> Path:
    return run.root / "compat" / old_version


def build_compatible(
    run: RunPaths,
    old_version: str,
    old_onnx: Path,
    pairs: CompatPairs,
    *,
    int8: bool = True,
    cache_dir: Path | None = None,
    quiet: bool = True,
    seed: int = 0,
) -> CompatBuild:
    from gates.compat.encode import encode_roles
    from training.compat import add_backward_map, fit_backward_map
    from training.export.export_run import export_run
    from training.models import load_sentence_transformer

    old_dims = tuple(sorted(json.loads((old_onnx / "embedder.json").read_text())["dims"], reverse=True))
    new_q, new_d = encode_roles(run.onnx, pairs.queries, pairs.documents, cache_dir, "compat new", quiet)
    old_q, old_d = encode_roles(
        old_onnx, pairs.queries, pairs.documents, cache_dir, f"compat {old_version}", quiet
    )
    fit = fit_backward_map(new_q, new_d, old_d, pairs.positives, list(old_dims), old_queries=old_q, seed=seed)
    folder = compat_folder(run, old_version)
    shutil.rmtree(folder, ignore_errors=True)  # a re-run of this stage replaces what an interrupted one left
    folder.mkdir(parents=True)
    np.save(folder / "backward_map.npy", fit.weight)
    model_dir = folder / ".model"
    add_backward_map(load_sentence_transformer(run.model), fit.weight).save(
        str(model_dir), safe_serialization=True
    )
    try:
        export_run(model_dir, folder / "onnx", dims=old_dims, int8=int8)
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)  # the run's model/ plus the map rebuild it
    return CompatBuild(
        old_version,
        folder,
        old_dims,
        {
            **fit.to_dict(),
            "pairs": pairs.n_pairs,
            "queries": len(pairs.queries),
            "documents": len(pairs.documents),
        },
    )
