"""The pipeline's compatibility stage: which old spaces this run answers in, and for each the build and verdict.

Targets (`compatibility` in the pipeline config):
    auto (default)     on when the registry has a champion: the champion's own space and every space the champion
                       itself answers in (so v0001's clients keep getting the newest model at each promotion,
                       each map trained directly against v0001's stored vectors rather than chained)
    off                never
    {with: [v0001]}    these versions' spaces (each must be servable in the registry)
Each target's verdict and evidence go to <run>/compat/<version>/compat.json; only offered spaces are promoted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gates.errors import EmbedgateGateError
from training.run_dir import RunPaths


class CompatTargetError(EmbedgateGateError):
    """A version named in `compatibility.with` is not a servable version of the registry."""


@dataclass
class CompatOutcome:
    verdicts: list[dict] = field(default_factory=list)
    skipped: str | None = None  # why nothing was built

    @property
    def offered(self) -> list[str]:
        return [v["old_version"] for v in self.verdicts if v["offered"]]

    def to_dict(self) -> dict:
        return {"offered": self.offered, "skipped": self.skipped, "verdicts": self.verdicts}


def target_versions(registry: Any, mode: str, versions: list[str] | None) -> list[str]:
    """The old versions whose spaces this run should answer in (see the module docstring)."""
    from service.aliases import read_state

    if mode == "off":
        return []
    state = read_state(registry)
    if versions:
        unknown = [v for v in versions if v not in state.servable]
        if unknown:
            raise CompatTargetError(
                f"compatibility.with names {unknown}, which {registry.location} does not serve; expected servable "
                f"versions {list(state.servable)} (embedgate history lists them)"
            )
        return list(versions)
    if state.champion is None:
        return []
    spaces = registry.manifest(state.champion).get("compatible_spaces") or {}
    return [state.champion, *(v for v in spaces if v in state.servable and v != state.champion)]


def run_compatibility(
    run: RunPaths,
    registry_root: Path,
    data: Any,
    eval_data: Path,
    eval_split: str,
    *,
    split: str = "train",
    mode: str = "auto",
    versions: list[str] | None = None,
    int8: bool = True,
    cache_dir: Path | None = None,
    quiet: bool = True,
    progress=lambda line: None,
) -> CompatOutcome:
    from gates.compat.build import build_compatible
    from gates.compat.data import CompatDataError, training_pairs
    from gates.compat.evaluate import evaluate_compatible
    from service.registry import Registry

    registry = Registry(registry_root)
    targets = target_versions(registry, mode, versions)
    if not targets:
        return CompatOutcome(
            skipped="off" if mode == "off" else "no champion in the registry: nothing to be compatible with"
        )
    try:
        pairs = training_pairs(data, split)
    except CompatDataError as err:
        return CompatOutcome(skipped=str(err))
    outcome = CompatOutcome()
    for version in targets:
        old_onnx = registry.version_dir(version) / "onnx"
        serving_dim = registry.manifest(version).get("serving_dim")
        progress(f"compatibility: fitting a map into {version}'s space on {pairs.n_pairs} training pairs ...")
        built = build_compatible(run, version, old_onnx, pairs, int8=int8, cache_dir=cache_dir, quiet=quiet)
        verdict = evaluate_compatible(
            run.onnx, built.onnx, version, old_onnx, serving_dim, eval_data, eval_split, cache_dir, quiet,
            trained_answers={pairs.documents[d] for docs in pairs.positives for d in docs},
        )  # fmt: skip
        # which v0001 this is: promotion into a registry whose v0001 has other files drops the space
        record = {**verdict.to_dict(), "old_fingerprint": registry.fingerprint(version), "fit": built.fit}
        (built.folder / "compat.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
        outcome.verdicts.append(record)
        progress(f"compatibility with {version}: {verdict.reason}")
        progress(_table(verdict.rows))
    return outcome


def _table(rows: list[dict]) -> str:
    lines = ["   dim   old-old   compat   new-new    delta  95% CI               recovered"]
    for r in rows:
        new = f"{r['new-new']:.4f}" if r["new-new"] is not None else "   -  "
        rec = f"{r['recovered']:.0%}" if r["recovered"] is not None else "-"
        lines.append(
            f"  {r['dim']:>4}   {r['old-old']:.4f}   {r['compat']:.4f}   {new}  {r['delta']:+.4f}  "
            f"[{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}]  {rec}"
        )
    return "\n".join(lines)
