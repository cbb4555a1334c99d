"""Start a registry from the model clients use today: the base model, exported exactly as embedgate serves any
version, becomes v0001 and the champion.

Why: most teams adopt embedgate while an off-the-shelf model already serves them and their vector database holds
its vectors. Registered as v0001, that model is what the first fine-tuned run is gated against, and the run's
compatibility stage (gates/compat/) fits the new model into v0001's space, so the stored vectors get the gain at
promotion (`"model": "champion@v0001"`) without re-embedding (docs/versions.md). Without it, v0001 is always a
fine-tuned model and the base model's clients have no space to be upgraded in.

Only an empty registry can start this way: a base model after fine-tuned versions would be a downgrade that no
gate checked (promote a gated run instead).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from gates.errors import EmbedgateGateError


class BaseRegistrationRefused(EmbedgateGateError):
    """The registry already has versions, or the requested serving dim is not one the export has."""


@dataclass(frozen=True)
class BaseVersion:
    version: str
    base_model: str
    serving_dim: int
    dims: tuple[int, ...]


def register_base(
    registry_root: str | Path,
    base_model: str,
    *,
    serving_dim: int | None = None,
    dims: list[int] | None = None,
    precision: str = "fp32",
    who: str | None = None,
) -> BaseVersion:
    """Export `base_model` (a bundled name such as all-MiniLM-L6-v2, or a sentence-transformers folder), fp32 and
    int8, at `dims` (default: the model's own, its full dim for a model not trained with Matryoshka; give the dim
    clients truncated to when they did), and add it as the registry's first version and champion."""
    import json

    from service.registry.registry import Registry
    from training.export.export_run import export_run
    from training.models import resolve_model_path

    if precision not in ("fp32", "int8"):
        raise BaseRegistrationRefused(f"precision {precision!r}: expected fp32 or int8")
    registry = Registry(registry_root)
    existing = registry.versions()
    if existing:
        raise BaseRegistrationRefused(
            f"{registry.location} already has {len(existing)} version(s) ({', '.join(existing[-3:])}); a base "
            f"model can only start an empty registry (promote a gated run instead, or use a new registry)"
        )
    model_dir = resolve_model_path(base_model)
    with tempfile.TemporaryDirectory(prefix="embedgate-base-") as scratch:
        out = Path(scratch) / "onnx"
        export_run(model_dir, out, dims=dims, int8=True)
        config = json.loads((out / "embedder.json").read_text(encoding="utf-8"))
        dims = tuple(sorted((int(d) for d in config["dims"]), reverse=True))
        chosen = serving_dim or dims[0]
        if chosen not in dims:
            raise BaseRegistrationRefused(
                f"serving dim {chosen}: expected one of the exported dims {list(dims)} (the clients' stored vectors "
                f"have the dim they were embedded at; the base model's full dim is {dims[0]})"
            )
        version = registry.add_version(
            {"onnx": out},
            metadata={
                "serving_dim": chosen,
                "serve_precision": precision,
                "baseline": None,
                "gate_passed": None,
                "base_model": base_model,
            },
            who=who,
            reason=f"the base model {base_model} as served (clients may hold its vectors); not gated",
            run_id=f"base-{Path(base_model).name}",
            make_champion=True,
        )
    return BaseVersion(version, base_model, chosen, dims)
