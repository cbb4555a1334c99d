"""The pipeline's compatibility stage: which old spaces this run answers in, and for each the build and verdict.

Targets (`compatibility` in the pipeline config):
    auto (default)     on when the registry has a champion: the champion's own space and every space a servable
                       version up to the champion answers in (so v0001's clients keep getting the newest model at
                       each promotion, each map trained directly against v0001's stored vectors rather than
                       chained; a space already served by an earlier upgrade must beat that upgrade too)
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
    from service.registry.aliases import read_state
    from service.versions.compat_spaces import spaces_in_manifest

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
    # every space a live version answers in, not only the champion's: when the last promotion could not offer
    # v0001's space, champion@v0001 still serves an earlier upgrade and the next candidate may improve on it
    live = {
        space
        for version in state.servable
        if int(version[1:]) <= int(state.champion[1:])
        for space in spaces_in_manifest(registry.manifest(version))
    }
    older = sorted(
        (v for v in live if v in state.servable and v != state.champion), key=lambda v: -int(v[1:])
    )
    return [state.champion, *older]


def current_in_space(registry: Any, space: str) -> tuple[str, Path] | None:
    """What `champion@<space>` serves today when that is an earlier compatible upgrade rather than the space's own
    version: (its name, e.g. "v0002@v0001", and its compatible export). The new space must beat it too."""
    from service.registry.aliases import read_state
    from service.versions.compat_spaces import newest_in_space, spaces_in_manifest

    state = read_state(registry)
    if state.champion is None:
        return None
    version = newest_in_space(
        state.servable, state.champion, space, lambda v: spaces_in_manifest(registry.manifest(v))
    )
    if version is None or version == space:
        return None
    return f"{version}@{space}", registry.version_dir(version) / "compat" / space / "onnx"


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
    from service.registry.registry import Registry

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
        current = current_in_space(registry, version)
        progress(f"compatibility: fitting a map into {version}'s space on {pairs.n_pairs} training pairs ...")
        built = build_compatible(run, version, old_onnx, pairs, int8=int8, cache_dir=cache_dir, quiet=quiet)
        verdict = evaluate_compatible(
            run.onnx, built.onnx, version, old_onnx, serving_dim, eval_data, eval_split, cache_dir, quiet,
            trained_answers={pairs.documents[d] for docs in pairs.positives for d in docs}, current=current,
        )  # fmt: skip
        # which v0001 this is: promotion into a registry whose v0001 has other files drops the space
        record = {**verdict.to_dict(), "old_fingerprint": registry.fingerprint(version), "fit": built.fit}
        (built.folder / "compat.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
        outcome.verdicts.append(record)
        progress(f"compatibility with {version}: {verdict.reason}")
        progress(_table(verdict.rows, verdict.current))
    return outcome


def _table(rows: list[dict], current: str | None = None) -> str:
    """Per dim: old-old, compat, new-new, compat - old-old with its interval, the share of the re-embedding gain;
    with `current` (an earlier upgrade serving that space), its score and compat - current with its interval."""
    head = "   dim   old-old   compat   new-new    delta  95% CI               recovered"
    lines = [head + (f"   {current:<12} vs it  95% CI" if current else "")]
    for r in rows:
        new = f"{r['new-new']:.4f}" if r["new-new"] is not None else "   -  "
        rec = f"{r['recovered']:.0%}" if r["recovered"] is not None else "-"
        line = (
            f"  {r['dim']:>4}   {r['old-old']:.4f}   {r['compat']:.4f}   {new}  {r['delta']:+.4f}  "
            f"[{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}]  {rec:>9}"
        )
        if current and "vs_current" in r:
            c = r["vs_current"]
            line += f"   {r['current']:<12.4f} {c['delta']:+.4f}  [{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}]"
        lines.append(line)
    return "\n".join(lines)
