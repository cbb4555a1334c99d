"""The gated path, end to end: data gate -> mine -> train -> export -> evaluate -> gate -> promote-on-pass.

    embedgate pipeline gates/demo.yaml          # exit 0 promoted, 1 blocked (reason printed), 2 error

Every stage writes into the run directory, so a blocked run can be inspected; `pipeline.json` records each
stage's status and wall time, and `manifest.json` the sha256 of every file the run produced.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from gates.errors import EmbedgateGateError
from gates.pipeline import steps
from gates.pipeline.config import PipelineConfig, worded_for_config
from gates.pipeline.stage_runner import Progress, StageBlocked, StageRecord, Stages
from service.errors import EmbedgateServiceError
from training.errors import EmbedgateTrainingError
from training.run_dir import RunPaths, write_json_atomic


@dataclass
class PipelineOutcome:
    run_dir: Path
    status: str  # promoted | passed (promotion disabled) | blocked | error
    reason: str
    stages: list[StageRecord]
    decision: object | None = None  # gates.quality_gate.decision.GateDecision
    promotion: object | None = None  # gates.promotion.PromotionResult
    cache_prune: dict | None = None  # gates.cache_prune.PruneResult.to_dict(), or {"error": ...}

    @property
    def exit_code(self) -> int:
        return {"promoted": 0, "passed": 0, "blocked": 1}.get(self.status, 2)

    def to_dict(self) -> dict:
        return {
            "run_dir": str(self.run_dir),
            "status": self.status,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "stages": [vars(s) for s in self.stages],
            "promotion": self.promotion.to_dict() if self.promotion else None,
            "cache_prune": self.cache_prune,
        }


def run_pipeline(
    config: PipelineConfig, progress: Progress = lambda _: None, quiet: bool = False
) -> PipelineOutcome:
    """Every stage, in order; `progress` gets one readable line per step (stage starts, epochs, results).
    quiet: no per-epoch lines and no progress bars (the CLI's --quiet also drops the stage lines)."""
    from training.device import resolve_device
    from training.run_dir import new_run_dir

    resolve_device(
        config.train.device
    )  # a device that cannot be used stops the run before anything is written
    started = time.time()
    run = new_run_dir(config.train)
    stages = Stages(progress, lambda err: worded_for_config(err, config))
    outcome = PipelineOutcome(run.root, "error", "", stages.records)
    try:
        _run_stages(config, run, stages, outcome, progress, quiet)
    except StageBlocked as blocked:
        outcome.status, outcome.reason = "blocked", str(blocked)
    except (EmbedgateGateError, EmbedgateTrainingError, EmbedgateServiceError) as err:
        # Every user-facing error ends the run the same way: recorded in pipeline.json, exit code 2.
        outcome.status, outcome.reason = "error", str(worded_for_config(err, config))
    finally:
        outcome.cache_prune = _prune_cache(config, started, progress)
        write_json_atomic(run.root / "pipeline.json", outcome.to_dict())
        _write_report(run, progress)
        if config.tracking.mlflow:
            _track(config, run, outcome, progress)
        write_manifest(run)
    return outcome


def _run_stages(
    config: PipelineConfig,
    run: RunPaths,
    stages: Stages,
    outcome: PipelineOutcome,
    progress: Progress,
    quiet: bool = False,
) -> None:
    """The stages in order (gates/pipeline/steps.py); a blocked stage raises StageBlocked and ends the run."""
    from gates.promotion_events import Webhook

    # A webhook without its secret is refused before hours of training, not after.
    webhook = (
        Webhook.from_config(config.promotion.webhook, config.promotion.webhook_secret_env)
        if config.promotion.enabled
        else None
    )
    config, data, holdout = steps.gated_data(config, run, stages, progress)  # the training table, loaded once
    trained = steps.mine_and_train(config, run, stages, data, progress, quiet)
    steps.export(config, run, stages, trained, progress)
    steps.evaluate(config, run, stages, progress, quiet)
    outcome.decision = steps.gate(config, run, stages, holdout, progress)
    steps.compatibility(config, run, stages, data, progress, quiet)
    if not config.promotion.enabled:
        outcome.status, outcome.reason = "passed", "gate passed; promotion disabled in the config"
        return
    outcome.promotion, outcome.reason = steps.promote(config, run, stages, data, webhook, progress)
    outcome.status = "promoted"


def _write_report(run: RunPaths, progress: Progress) -> None:
    """report.html for every run, blocked or not. It only reads what the stages wrote, so a failure to draw it
    is reported and does not change the run's outcome."""
    from gates.pipeline.run_report import build_report

    try:
        progress(f"report: {build_report(run)}")
    except Exception as err:  # noqa: BLE001 - the run's outcome is already recorded; say why there is no page
        progress(
            f"report: not written ({type(err).__name__}: {err}); rebuild with `embedgate report {run.root}`"
        )


def _track(config: PipelineConfig, run: RunPaths, outcome: PipelineOutcome, progress: Progress) -> None:
    """Log the run to MLflow. The run's outcome (and the promotion) stands either way; a tracking failure is
    printed and kept in tracking.json, so CI can see it without the promotion being undone."""
    from gates.pipeline.tracking import TrackingError, log_pipeline_run

    section = config.tracking
    try:
        logged = log_pipeline_run(
            section.mlflow,
            section.experiment,
            section.registered_model,
            run,
            outcome.to_dict(),
            {"train": config.train.to_yaml_dict(), **config.model_dump(mode="json", exclude={"train"})},
            config.promotion.registry if config.promotion.enabled else None,
        )
    except TrackingError as err:
        write_json_atomic(run.root / "tracking.json", {"uri": section.mlflow, "error": str(err)})
        progress(f"tracking: not logged: {err}")
        return
    alias = (
        f"; {section.registered_model} version {logged['model_version']} is @champion"
        if logged["model_version"]
        else ""
    )
    progress(f"tracking: MLflow run {logged['run_id']} in experiment {section.experiment}{alias}")


def _prune_cache(config: PipelineConfig, started: float, progress: Progress) -> dict | None:
    """Bound the cache after every run (cache.max_gb, cache.max_age_days), never removing what this run used. A
    failure to prune is reported, not raised: it must not turn a finished run into an error."""
    cache_dir = config.cache_dir()
    if cache_dir is None:
        return None
    from gates.cache_prune import CacheBounds, prune_cache

    try:
        result = prune_cache(
            cache_dir, CacheBounds(config.cache.max_gb, config.cache.max_age_days), keep_since=started
        )
    except OSError as err:
        progress(f"cache: not pruned: {err}")
        return {"error": str(err)}
    if result.removed:
        progress(result.summary())
    return result.to_dict()


def write_manifest(run: RunPaths) -> None:
    """sha256 and size of every file in the run (checkpoints excluded: they are deleted after training)."""
    from service.registry.registry import build_manifest

    write_json_atomic(
        run.manifest, build_manifest(run.root, {"run_id": run.run_id}, skip_prefixes=("train/checkpoints/",))
    )
