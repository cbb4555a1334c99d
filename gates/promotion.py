"""Promotion: copy a gated run's served artifacts into the registry as a new immutable version and make it the
champion (atomically), record who/when/why and the metrics; refuse a run whose gate did not pass unless forced
with a recorded reason. Also saves the version to the BentoML model store (`embedgate-embedder:<version>`) so
`bentoml build` packages the champion.

    embedgate promote artifacts/runs/<run_id>        # exit 0 promoted, 1 refused
    embedgate rollback                               # previous champion back, one command
    embedgate history
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from gates.errors import EmbedgateGateError
from gates.quality_gate.stage import read_decision
from service.registry import Registry
from training.run_dir import RunPaths

BENTO_MODEL_NAME = "embedgate-embedder"


class PromotionRefused(EmbedgateGateError):
    """The run's gate did not pass (or it was never gated) and promotion was not forced."""


@dataclass(frozen=True)
class PromotionResult:
    version: str
    previous: str | None
    run_id: str
    forced: bool
    serving_dim: int
    bento_tag: str | None
    bento_error: str | None = None

    def to_dict(self) -> dict:
        return dict(vars(self))


def served_metrics(decision: dict) -> dict:
    """The numbers worth keeping in history: each check's candidate/baseline/delta."""
    return {row["check"] + (f"[{row['metric']}]" if row.get("metric") else ""): {
        k: row.get(k) for k in ("candidate", "baseline", "delta", "p_value", "status")} for row in decision["checks"]}


def promote_run(run: RunPaths, registry_root: Path, *, force: bool = False, reason: str = "",
                who: str | None = None, serve_precision: str | None = None, reference_dir: Path | None = None,
                bento_store: bool = True) -> PromotionResult:
    registry = Registry(registry_root)
    decision = read_decision(run)
    if force and not reason.strip():
        raise EmbedgateGateError("--force needs --reason: say why a run that failed its gate should serve "
                               "(the reason is recorded in the registry history)")
    if not decision["passed"] and not force:
        failed = [f"{r['check']} ({r.get('metric') or r['kind']}): {r['reason']}" for r in decision["checks"]
                  if r["status"] == "fail" and r["severity"] == "critical"]
        registry.record_refusal(run_id=run.run_id, who=who, reason="gate failed: " + "; ".join(failed),
                                metrics=served_metrics(decision))
        raise PromotionRefused(f"run {run.run_id} did not pass its gate, promotion refused:\n  - " +
                               "\n  - ".join(failed) + "\nuse --force --reason '...' to override (recorded)")
    precision = serve_precision or decision["policy"].get("serve_precision", "fp32")
    sources = {"onnx": run.onnx, "decision.json": run.gate / "decision.json"}
    for name in ("candidate.json", "baseline.json", "summary.md"):
        if (run.eval / name).is_file():
            sources[f"eval/{name}"] = run.eval / name
    if reference_dir is not None and reference_dir.is_dir():
        sources["reference"] = reference_dir
    previous = registry.champion()
    metadata = {"serving_dim": decision["serving_dim"], "serve_precision": precision,
                "baseline": decision["baseline"], "gate_passed": decision["passed"]}
    version = registry.add_version(sources, metadata=metadata, who=who,
                                   reason=reason or "gate passed", forced=force and not decision["passed"],
                                   run_id=run.run_id, metrics=served_metrics(decision))
    tag, bento_error = None, None
    if bento_store:
        # The registry is the source of truth and the promotion has happened; the BentoML store copy only
        # serves `bentoml build`, so its failure is reported, not fatal.
        try:
            tag = save_to_bento_store(registry, version)
        except Exception as err:  # BentoML raises several types (store permissions, disk)
            bento_error = f"{type(err).__name__}: {err}"
    return PromotionResult(version, previous.version if previous else None, run.run_id,
                           force and not decision["passed"], decision["serving_dim"], tag, bento_error)


def save_to_bento_store(registry: Registry, version: str, make_latest: bool = False) -> str:
    """The version folder, as is, into BentoML's model store: `bentoml build` then packages the champion.

    The tag's version is the registry version plus a hash of its manifest, because the BentoML store is shared by
    every registry on the machine (two registries both have a v0001); saving the same content twice reuses it,
    unless `make_latest` (after a rollback): then it is saved again so that `:latest`, which `bentofile.yaml`
    packs, is the champion again."""
    import hashlib

    import bentoml
    from bentoml.exceptions import NotFound

    manifest = registry.verify(version)
    digest = hashlib.sha256((registry.version_dir(version) / "manifest.json").read_bytes()).hexdigest()[:10]
    tag = f"{BENTO_MODEL_NAME}:{version}-{digest}"
    try:
        bentoml.models.get(tag)
        if not make_latest:
            return tag
        bentoml.models.delete(tag)
    except NotFound:
        pass
    labels = {"registry_version": version, "run_id": str(manifest.get("run_id")),
              "serving_dim": str(manifest.get("serving_dim")), "serve_precision": str(manifest.get("serve_precision"))}
    with bentoml.models.create(tag, labels=labels, metadata={"manifest_files": len(manifest["files"])}) as model_ref:
        source = registry.version_dir(version)
        for path in source.rglob("*"):
            if path.is_file():
                target = Path(model_ref.path) / path.relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
    return tag


@dataclass(frozen=True)
class RollbackResult:
    version: str
    previous: str | None
    bento_tag: str | None
    bento_error: str | None = None


def rollback(registry_root: Path, *, who: str | None = None, reason: str = "", to: str | None = None,
             bento_store: bool = True) -> RollbackResult:
    registry = Registry(registry_root)
    champion = registry.rollback(who=who, reason=reason, to=to)
    tag, error = None, None
    if bento_store:
        try:
            tag = save_to_bento_store(registry, champion.version, make_latest=True)
        except Exception as err:  # reported, not fatal: the registry rollback stands
            error = f"{type(err).__name__}: {err}"
    return RollbackResult(champion.version, champion.previous, tag, error)


def history(registry_root: Path) -> list[dict]:
    return [entry.to_dict() for entry in Registry(registry_root).history()]


