"""Promotion: copy a gated run's served artifacts into the registry as a new immutable version and make it the
champion (atomically), record who/when/why and the metrics; refuse a run whose gate did not pass unless forced
with a recorded reason. Also saves the version to the BentoML model store (`embedgate-embedder-<registry
id>:<version>-<hash>`), from where `embedgate build-bento` packs the champion (gates/bento.py).

    embedgate promote artifacts/runs/<run_id>        # exit 0 promoted, 1 refused
    embedgate promote artifacts/runs/<run_id> --staged   # servable by name and as `candidate`; champion stays
    embedgate cutover v0003                          # champion -> v0003 (docs/versions.md)
    embedgate rollback                               # previous champion back, one command
    embedgate history

Each promotion, cutover and rollback records whether clients must re-embed (`reembed_required`) and, with a
webhook, is POSTed as a signed event (gates/promotion_events.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from gates.errors import EmbedgateGateError
from gates.promotion_events import Webhook, build_event, notify
from gates.quality_gate.stage import read_decision
from service.registry import aliases
from service.registry.registry import ChampionChanged, DuplicatePromotion, Registry
from training.run_dir import RunPaths

BENTO_MODEL_NAME = "embedgate-embedder"
PROMOTION_MODES = ("immediate", "staged")


class PromotionRefused(EmbedgateGateError):
    """The run's gate did not pass (or it was never gated) and promotion was not forced."""


class BaselineNotChampion(PromotionRefused):
    """The run's gate compared it with another model than the registry's current champion."""


def gated_against(decision: dict) -> tuple[str | None, str | None]:
    """(the champion version the gate compared the run with, None for the base model; its Registry.fingerprint,
    None when not recorded). Decisions written before these fields name the champion only in `baseline`."""
    if "baseline_version" in decision:
        return decision["baseline_version"], decision.get("baseline_fingerprint")
    match = re.fullmatch(r"champion (v\d{4,})", str(decision.get("baseline", "")))
    return (match.group(1) if match else None), None


def baseline_mismatch(decision: dict, registry: Registry) -> str | None:
    """Why the run's gate does not speak for a promotion into `registry` now (None: it does). The gate's promise
    is "better than what it replaces": a gate against the base model, an older champion, or another registry's
    champion of the same name proves nothing about the champion it would replace."""
    version, fingerprint = gated_against(decision)
    champion = registry.champion()
    current = champion.version if champion else None
    if version != current:
        compared = f"champion {version}" if version else f"the base model ({decision.get('baseline')})"
        return (
            f"its gate compared it with {compared}, but the champion of {registry.location} is "
            f"{current or 'none'}"
        )
    if current is not None and fingerprint is not None and fingerprint != registry.fingerprint(current):
        return (
            f"its gate compared it with a champion {version} whose files differ from {registry.location}'s "
            f"{current} (another registry's {version}?)"
        )
    return None


@dataclass(frozen=True)
class PromotionResult:
    version: str
    previous: str | None
    run_id: str
    forced: bool
    serving_dim: int
    bento_tag: str | None
    bento_error: str | None = None
    alias: str = aliases.CHAMPION  # the alias that moved: champion (immediate) or candidate (staged)
    reembed_required: bool = False
    webhook_error: str | None = None
    # older versions whose stored vectors this version answers in (`<version>@<old>`), and those dropped, with why
    compatible_spaces: tuple[str, ...] = ()
    compat_dropped: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return dict(vars(self))


def served_metrics(decision: dict) -> dict:
    """The numbers worth keeping in history: each check's candidate/baseline/delta."""
    return {
        row["check"] + (f"[{row['metric']}]" if row.get("metric") else ""): {
            k: row.get(k) for k in ("candidate", "baseline", "delta", "p_value", "status")
        }
        for row in decision["checks"]
    }


def promote_run(
    run: RunPaths,
    registry_root: Path,
    *,
    force: bool = False,
    reason: str = "",
    who: str | None = None,
    serve_precision: str | None = None,
    reference_dir: Path | None = None,
    bento_store: bool = True,
    mode: str = "immediate",
    webhook: Webhook | None = None,
) -> PromotionResult:
    """Promote a gated run. `mode="immediate"` moves the champion at once; `"staged"` makes the version servable
    by name and as `candidate`, and the champion moves later with `cutover`."""
    if mode not in PROMOTION_MODES:
        raise EmbedgateGateError(f"promotion mode {mode!r}: expected one of {list(PROMOTION_MODES)}")
    registry = Registry(registry_root)
    decision = read_decision(run)
    if force and not reason.strip():
        raise EmbedgateGateError(
            "--force needs --reason: say why a run that failed its gate should serve "
            "(the reason is recorded in the registry history)"
        )
    if not decision["passed"] and not force:
        failed = [
            f"{r['check']} ({r.get('metric') or r['kind']}): {r['reason']}"
            for r in decision["checks"]
            if r["status"] == "fail" and r["severity"] == "critical"
        ]
        registry.record_refusal(
            run_id=run.run_id,
            who=who,
            reason="gate failed: " + "; ".join(failed),
            metrics=served_metrics(decision),
        )
        raise PromotionRefused(
            f"run {run.run_id} did not pass its gate, promotion refused:\n  - "
            + "\n  - ".join(failed)
            + "\nuse --force --reason '...' to override (recorded)"
        )
    precision = serve_precision or decision["policy"].get("serve_precision", "fp32")
    sources = {"onnx": run.onnx, "decision.json": run.gate / "decision.json"}
    for name in ("candidate.json", "baseline.json", "summary.md"):
        if (run.eval / name).is_file():
            sources[f"eval/{name}"] = run.eval / name
    if reference_dir is None and (run.root / "reference").is_dir():
        # The pipeline writes the run's drift reference here; `embedgate promote` keeps it as the pipeline does.
        reference_dir = run.root / "reference"
    if reference_dir is not None and reference_dir.is_dir():
        sources["reference"] = reference_dir
    spaces, dropped = compatible_spaces(run, registry)
    for old in spaces:
        sources[f"compat/{old}/onnx"] = run.root / "compat" / old / "onnx"
        sources[f"compat/{old}/compat.json"] = run.root / "compat" / old / "compat.json"
    metadata = {
        "serving_dim": decision["serving_dim"],
        "serve_precision": precision,
        "baseline": decision["baseline"],
        "gate_passed": decision["passed"],
        **({"compatible_spaces": spaces} if spaces else {}),
    }
    try:  # checked again under the registry's lock; first here, where it is the clearest refusal
        registry.refuse_duplicate(run.run_id, metadata)
    except DuplicatePromotion as duplicate:
        raise PromotionRefused(f"{duplicate}; nothing was promoted") from None
    mismatch = baseline_mismatch(decision, registry)
    if mismatch is not None and not force:
        champion = registry.champion()
        registry.record_refusal(
            run_id=run.run_id,
            who=who,
            reason=f"not gated against the champion: {mismatch}",
            metrics=served_metrics(decision),
        )
        raise BaselineNotChampion(
            f"run {run.run_id} cannot be promoted: {mismatch}, so its gate says nothing about the model it "
            f"would replace. Re-gate it against {champion.version if champion else 'the base model'}:\n"
            f"  embedgate evaluate {run.root} --data EVAL_SET --registry {registry.location}\n"
            f"  embedgate gate {run.root}\n"
            f"then promote again; or --force --reason '...' to override (recorded)"
        )
    staged = mode == "staged"
    previous = (
        registry.champion()
    )  # for the re-embed estimate; the reported previous is read under the lock below
    reembed = previous is not None and (
        aliases.version_space(registry, previous.version)
        != aliases.embedding_space(run.onnx, decision["serving_dim"])
    )
    try:
        version = registry.add_version(
            sources,
            metadata=metadata,
            who=who,
            reason=(reason or "gate passed")
            + (f" (forced past: {mismatch})" if mismatch is not None else "")
            + (
                f"; answers in the stored spaces of {', '.join(spaces)} too (no re-embedding needed)"
                if spaces
                else ""
            ),
            forced=force and (not decision["passed"] or mismatch is not None),
            run_id=run.run_id,
            metrics=served_metrics(decision),
            make_champion=not staged,
            alias=aliases.CANDIDATE if staged else None,
            reembed_required=reembed,
            refuse_duplicate_run=True,
            # the champion the gate compared against must still be the champion at the switch (a race with
            # another promotion); forced past a mismatch: the champion read under the registry's lock
            **({} if mismatch is not None else {"expected_champion": gated_against(decision)[0]}),
        )
    except DuplicatePromotion as duplicate:
        raise PromotionRefused(f"{duplicate}; nothing was promoted") from None
    except ChampionChanged as changed:  # object storage: another promotion won the compare-and-swap
        raise PromotionRefused(str(changed)) from None
    # The champion when this version was promoted, as add_version read it under the registry lock and recorded it
    # (the one read above could be stale: two concurrent promotions would both report it). For a staged promotion
    # it is the champion the candidate will be cut over from.
    previous_version = next(
        (
            entry.from_version
            for entry in reversed(registry.history())
            if entry.version == version and entry.action == "promote"
        ),
        None,
    )
    if staged:
        aliases.set_candidate(registry, version)
    alias = aliases.CANDIDATE if staged else aliases.CHAMPION
    tag, bento_error = None, None
    if bento_store:
        # The registry is the source of truth and the promotion has happened; the BentoML store copy only
        # serves `bentoml build`, so its failure is reported, not fatal.
        try:
            tag = save_to_bento_store(registry, version)
        except Exception as err:  # BentoML raises several types (store permissions, disk)
            bento_error = f"{type(err).__name__}: {err}"
    event = build_event(
        "promotion",
        registry_root,
        version=version,
        previous=previous_version,
        alias=alias,
        reembed_required=reembed,
        serving_dim=decision["serving_dim"],
        run_id=run.run_id,
        compatible_spaces=list(spaces),
    )
    webhook_error = notify(webhook, registry_root, event)
    return PromotionResult(
        version,
        previous_version,
        run.run_id,
        force and (not decision["passed"] or mismatch is not None),
        decision["serving_dim"],
        tag,
        bento_error,
        alias,
        reembed,
        webhook_error,
        tuple(spaces),
        tuple(dropped),
    )


def compatible_spaces(run: RunPaths, registry: Registry) -> tuple[dict[str, dict], list[str]]:
    """The run's offered compatible spaces (gates/compat/) that belong to this registry: {old version: what the
    manifest records}, and the dropped ones with why (refused by their evaluation, or built against another
    registry's version of that name)."""
    import json

    spaces, dropped = {}, []
    for record_path in sorted((run.root / "compat").glob("v*/compat.json")):
        record = json.loads(record_path.read_text(encoding="utf-8"))
        old = record["old_version"]
        if not record.get("offered"):
            continue
        if old not in registry.versions() or record.get("old_fingerprint") != registry.fingerprint(old):
            dropped.append(f"{old}: built against another registry's {old}; not promoted")
            continue
        serving = next((row for row in record["rows"] if row["dim"] == record["serving_dim"]), {})
        spaces[old] = {
            "serving_dim": record["serving_dim"],
            "dims": [row["dim"] for row in record["rows"]],
            "compat": serving.get("compat"),
            "old-old": serving.get("old-old"),
            "new-new": serving.get("new-new"),
        }
    return spaces, dropped


def registry_id(registry: Registry) -> str:
    """A short id no other registry shares: the hash of its first version's manifest (its creation time and run),
    which never changes, so the id survives moving or re-mounting the folder."""
    versions = registry.versions()
    if not versions:
        raise EmbedgateGateError(
            f"{registry.location} has no version yet: promote a run first (`embedgate promote RUN_DIR`)"
        )
    first = json.dumps(registry.manifest(versions[0]), sort_keys=True)
    return hashlib.sha256(first.encode()).hexdigest()[:10]


def bento_model_name(registry: Registry) -> str:
    """This registry's model name in BentoML's model store. The store is shared by every registry of a user; a
    name of its own gives each registry its own `:latest`, so one registry's promotion never moves another's."""
    return f"{BENTO_MODEL_NAME}-{registry_id(registry)}"


def save_to_bento_store(registry: Registry, version: str, make_latest: bool = False) -> str:
    """The version folder, as is, into BentoML's model store as `embedgate-embedder-<registry id>:<version>-<manifest
    hash>`: `embedgate build-bento` packs the champion's exact tag from there (gates/bento.py). Saving the same
    content twice reuses it, unless `make_latest` (after a rollback or cutover): then it is saved again so that
    this registry's `:latest` is its champion again."""
    import bentoml
    from bentoml.exceptions import NotFound

    manifest = registry.verify(version)
    digest = hashlib.sha256((registry.version_dir(version) / "manifest.json").read_bytes()).hexdigest()[:10]
    tag = f"{bento_model_name(registry)}:{version}-{digest}"
    try:
        bentoml.models.get(tag)
        if not make_latest:
            return tag
        bentoml.models.delete(tag)
    except NotFound:
        pass
    labels = {
        "registry_id": registry_id(registry),
        "registry_version": version,
        "run_id": str(manifest.get("run_id")),
        "serving_dim": str(manifest.get("serving_dim")),
        "serve_precision": str(manifest.get("serve_precision")),
    }
    with bentoml.models.create(
        tag,
        labels=labels,
        metadata={"manifest_files": len(manifest["files"]), "registry": registry.location},
    ) as model_ref:
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
    previous: str | None  # where a further rollback would go (None: `version` was the first champion)
    bento_tag: str | None
    bento_error: str | None = None
    reembed_required: bool | None = None
    webhook_error: str | None = None
    rolled_back_from: str | None = None
    previous_dim: int | None = None
    serving_dim: int | None = None
    dim_changed: bool = False


def rollback(
    registry_root: Path,
    *,
    who: str | None = None,
    reason: str = "",
    to: str | None = None,
    allow_dim_change: bool = False,
    bento_store: bool = True,
    webhook: Webhook | None = None,
) -> RollbackResult:
    """Move the champion back (service.registry.aliases.rollback: cutover's guards, the dim change included), then save the
    restored champion to BentoML's model store and send the event. A refused dim change raises RollbackRefused."""
    registry = Registry(registry_root)
    done = aliases.rollback(registry, to=to, allow_dim_change=allow_dim_change, who=who, reason=reason)
    tag, error = None, None
    if bento_store:
        try:
            tag = save_to_bento_store(registry, done.version, make_latest=True)
        except Exception as err:  # reported, not fatal: the registry rollback stands
            error = f"{type(err).__name__}: {err}"
    event = build_event(
        "rollback",
        registry_root,
        version=done.version,
        previous=done.rolled_back_from,
        alias=aliases.CHAMPION,
        reembed_required=done.reembed_required,
        serving_dim=done.serving_dim,
        previous_dim=done.previous_dim,
    )
    webhook_error = notify(webhook, registry_root, event)
    return RollbackResult(
        done.version,
        done.previous,
        tag,
        error,
        done.reembed_required,
        webhook_error,
        done.rolled_back_from,
        done.previous_dim,
        done.serving_dim,
        done.dim_changed,
    )


@dataclass(frozen=True)
class CutoverOutcome:
    result: aliases.CutoverResult
    bento_tag: str | None
    bento_error: str | None
    webhook_error: str | None


def cutover(
    registry_root: Path,
    version: str,
    *,
    allow_dim_change: bool = False,
    who: str | None = None,
    reason: str = "",
    bento_store: bool = True,
    webhook: Webhook | None = None,
) -> CutoverOutcome:
    """Move the champion alias to `version` (service.registry.aliases.cutover), then point BentoML's `:latest` at it and
    send the event. A refused cutover (dim change without `allow_dim_change`) raises CutoverRefused."""
    registry = Registry(registry_root)
    result = aliases.cutover(registry, version, allow_dim_change=allow_dim_change, who=who, reason=reason)
    tag, error = None, None
    if bento_store:
        try:
            tag = save_to_bento_store(registry, version, make_latest=True)
        except Exception as err:  # reported, not fatal: the registry cutover stands
            error = f"{type(err).__name__}: {err}"
    event = build_event(
        "cutover",
        registry_root,
        version=version,
        previous=result.previous,
        alias=aliases.CHAMPION,
        reembed_required=result.reembed_required,
        serving_dim=result.serving_dim,
        previous_dim=result.previous_dim,
    )
    return CutoverOutcome(result, tag, error, notify(webhook, registry_root, event))


def history(registry_root: Path) -> list[dict]:
    return [entry.to_dict() for entry in Registry(registry_root).history()]
