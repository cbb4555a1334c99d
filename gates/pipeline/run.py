"""The gated path, end to end: data gate -> mine -> train -> export -> evaluate -> gate -> promote-on-pass.

    embedgate pipeline gates/demo.yaml          # exit 0 promoted, 1 blocked (reason printed), 2 error

Every stage writes into the run directory, so a blocked run can be inspected; `pipeline.json` records each
stage's status and wall time, and `manifest.json` the sha256 of every file the run produced.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gates.errors import EmbedgateGateError
from gates.pipeline.config import PipelineConfig, worded_for_config
from service.errors import EmbedgateServiceError
from training.errors import EmbedgateTrainingError
from training.run_dir import RunPaths, write_json_atomic

Progress = Callable[[str], None]


class StageBlocked(EmbedgateGateError):
    """A gate said no: the run stops here, with the reason."""


@dataclass
class StageRecord:
    name: str
    status: str  # passed | blocked | skipped | error
    seconds: float
    detail: dict = field(default_factory=dict)
    cpu_seconds: float | None = None  # user + system, this process and its finished children
    peak_rss_mb: float | None = None  # this process and its live children (gates/pipeline/stage_cost.py)


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


STAGE_DOES = {  # what a person watching the run is told each stage is doing
    "data gate": "checking the training and eval data with the Great Expectations suites ...",
    "mine + train": "mining hard negatives with the base model, then fine-tuning (one line per dev evaluation) ...",
    "export": "exporting one ONNX graph per Matryoshka dim, fp32 and int8 (+ fp16 on a GPU), each checked for parity ...",
    "evaluate": "encoding the eval queries and corpus with the candidate and the baseline (cached ones are "
    "reused) ...",
    "gate": "applying the gate policy (significance over the eval queries, or pairs for STS) ...",
    "drift reference": "embedding the drift reference for the served version ...",
    "promote": "copying the version into the registry and switching the champion ...",
}


class _Stages:
    """Runs named stages, timing each and recording its status."""

    def __init__(self, progress: Progress, reword=lambda err: err):
        self.records: list[StageRecord] = []
        self.progress = progress
        self.reword = reword  # an error as the pipeline's user should read it (see config.worded_for_config)

    def run(self, name: str, func, *args, **kwargs):
        from gates.pipeline.stage_cost import measure, release_memory

        self.progress(f"[{name}] {STAGE_DOES.get(name, '...')}")
        outcome: tuple[str, dict] = ("passed", {})
        try:
            with measure() as cost:
                try:
                    return func(*args, **kwargs)
                except StageBlocked as blocked:
                    outcome = ("blocked", {"reason": str(blocked)})
                    raise
                except BaseException as err:
                    reworded = self.reword(err)
                    outcome = ("error", {"error": f"{type(reworded).__name__}: {reworded}"})
                    if reworded is not err:
                        raise reworded from None
                    raise
        finally:
            release_memory()  # what the stage freed goes back to the system, not into the next stage's peak
            self._record(name, *outcome, cost)

    def note(self, **detail) -> None:
        """Attach what the last stage produced (counts, paths) to its record."""
        self.records[-1].detail.update(detail)

    def _record(self, name, status, detail, cost):
        self.records.append(StageRecord(name, status, cost.wall_s, detail, cost.cpu_s, cost.peak_rss_mb))
        self.progress(
            f"[{name}] {status} in {cost.wall_s:.1f}s ({cost.cpu_s:.0f} CPU s, peak RSS {cost.peak_rss_mb:.0f} MB)"
        )


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
    stages = _Stages(progress, lambda err: worded_for_config(err, config))
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
    stages: _Stages,
    outcome: PipelineOutcome,
    progress: Progress,
    quiet: bool = False,
) -> None:
    from gates.pipeline.stages import data_gate, validate_mined
    from gates.promotion_events import Webhook

    # A webhook without its secret is refused before hours of training, not after.
    webhook = (
        Webhook.from_config(config.promotion.webhook, config.promotion.webhook_secret_env)
        if config.promotion.enabled
        else None
    )
    gate = stages.run("data gate", data_gate, config.train, run.data)
    stages.note(report=str(run.data / "report.json"))
    progress(gate.summary)
    if not gate.passed:
        stages.records[-1].status = "blocked"
        raise StageBlocked(
            f"data gate failed: {len(gate.report.failures)} check(s); see {run.data / 'report.json'}"
        )
    holdout = None
    if config.needs_holdout():
        config, holdout = _hold_out(config, run, stages, progress)

    def check_mined(path: Path) -> None:
        mined_gate = validate_mined(path, _eval_path(config), _tokenizer(config))
        if not mined_gate.passed:
            raise StageBlocked(
                f"the mined hard-negatives set failed the data gate; see "
                f"{path.parent / 'data-gate' / 'report.json'}"
            )

    from training.finetune.train import train

    trained = stages.run(
        "mine + train",
        train,
        config.train,
        run_dir=run.root,
        progress=False,
        check_mined=check_mined,
        keep_checkpoints=False,
        report=None if quiet else progress,
        embedding_cache=config.cache_dir(),
        gradient_checkpointing=config.memory.wants_checkpointing(config.train.device),
    )
    stages.note(
        loss=trained.loss,
        rows=trained.train_rows,
        steps=trained.steps,
        examples_per_second=trained.examples_per_second,
        best_dev=trained.best_metric,
        mining=(trained.mining or {}).get("strategy"),
        rotation=(trained.rotation or {}).get("reason"),
        advice=[tip["message"] for tip in trained.advice],
        early_stopping=trained.early_stopping,
        checkpoint=trained.checkpoint_choice,
    )
    stopping = trained.early_stopping
    for line in [
        f"rotation: {(trained.rotation or {}).get('reason', 'n/a')}",
        *([f"checkpoint: {trained.checkpoint_choice}"] if trained.checkpoint_choice else []),
        *(
            [
                f"early stopping: {stopping['reason']}; ran {stopping['epochs_run']:g} of "
                f"{stopping['epochs_scheduled']:g} epochs"
                + (
                    f"; the last dev gain beyond noise at step {stopping['last_gain_beyond_noise_at_step']}"
                    if stopping.get("last_gain_beyond_noise_at_step") is not None
                    else ""
                )
            ]
            if stopping
            else []
        ),
        *(f"advice: {tip['message']}" for tip in trained.advice),
    ]:
        progress(line)

    from training.export.export_run import export_run

    dims = config.export.dims or trained.config["matryoshka_dims"]
    exported = stages.run(
        "export",
        export_run,
        run.model,
        run.onnx,
        dims=dims,
        int8=config.export.int8,
        fp16=config.export.wants_fp16(config.train.device),
    )
    stages.note(graphs=len(exported.graphs), fp16=(exported.fp16 or {}).get("status"))
    if exported.fp16 and exported.fp16["status"] == "refused":
        progress(f"  fp16: {exported.fp16['reason']}")

    from gates.evaluation.evaluate import load_sts_set, run_evaluation
    from training.data.general_texts import rotation_fit_texts

    sts_path = config.general_sts()
    # the rotation's PCA is fitted on half the packaged general sentences: the check scores the other half only
    sts = (
        load_sts_set(sts_path, config.evaluation.sts_limit, rotation_fit_texts(sts_path))
        if sts_path
        else None
    )
    backends = tuple(b for b in config.evaluation.backends if b != "onnx-int8" or config.export.int8)
    registry = config.promotion.registry if config.promotion.enabled else None
    evaluated = stages.run(
        "evaluate",
        run_evaluation,
        run,
        config.evaluation_data(),
        config.evaluation.split,
        # The registry's champion is the baseline even with promotion disabled: a run promoted later
        # (`embedgate promote`) must have been gated against the model it would replace, or it is refused.
        registry_root=config.promotion.registry,
        base_model=config.train.base_model,
        backends=backends,
        sts=sts,
        cache_dir=config.cache_dir(),
        quiet=quiet,
        **_eval_devices(config),
    )
    stages.note(timings=evaluated.timings, baseline=evaluated.baseline.model.name, cache=evaluated.cache)
    if evaluated.cache:
        progress(
            f"  embedding cache: {evaluated.cache['hits']} hit(s), {evaluated.cache['misses']} encoded "
            f"({evaluated.cache['encoded_texts']} texts)"
        )

    from gates.quality_gate.stage import run_gate

    decision = stages.run("gate", run_gate, run, config.gate.policy)
    outcome.decision = decision
    stages.note(
        passed=decision.passed,
        serving_dim=decision.serving_dim,
        evaluation=holdout.describe() if holdout else str(config.evaluation_data()),
    )
    if holdout is not None:
        progress(f"evaluation: {holdout.describe()}")
    progress(decision.table())
    if not decision.passed:
        stages.records[-1].status = "blocked"
        if registry is not None:
            from gates.promotion import served_metrics
            from service.registry.registry import Registry

            Registry(registry).record_refusal(
                run_id=run.run_id,
                who=None,
                reason="pipeline: gate failed",
                metrics=served_metrics(decision.to_dict()),
            )
        reasons = "; ".join(f"{r.check} [{r.metric}]: {r.reason}" for r in decision.failures)
        raise StageBlocked(f"quality gate failed, not promoted: {reasons}")
    compat = stages.run("compatibility", _compatibility, config, run, quiet, progress)
    stages.note(**compat.to_dict())
    if compat.skipped and config.compatibility.mode != "off":
        progress(f"compatibility: none built ({compat.skipped})")
    if not config.promotion.enabled:
        outcome.status, outcome.reason = "passed", "gate passed; promotion disabled in the config"
        return

    from gates.promotion import promote_run

    reference, note = stages.run("drift reference", _build_reference, config, run)
    stages.note(reference=str(reference) if reference else None, note=note)
    if note:
        progress(f"drift reference: {note}")
    promoted = stages.run(
        "promote",
        promote_run,
        run,
        registry,
        reason="pipeline: gate passed",
        reference_dir=reference,
        mode=config.promotion.mode,
        webhook=webhook,
    )
    stages.note(**promoted.to_dict())
    outcome.promotion = promoted
    outcome.status = "promoted"
    outcome.reason = (
        f"{promoted.version} is the champion (was {promoted.previous or 'none'})"
        if promoted.alias == "champion"
        else f"{promoted.version} is staged as the candidate; {promoted.previous or 'none'} stays the "
        f"champion until `embedgate cutover {promoted.version}`"
    )


def _hold_out(config: PipelineConfig, run: RunPaths, stages: _Stages, progress: Progress):
    """No BEIR folder: split the training table into train rows and an eval set in the run (pairs-like data by
    anchor into a BEIR folder; STS data by sentence into held-out scored pairs, gated on Spearman), then run the
    data gate's leakage check on the split. -> (the config using the split, the split)."""
    from gates.pipeline.stages import data_gate
    from training.data.formats import DatasetType
    from training.data.holdout import hold_out_by_anchor
    from training.data.holdout_sts import hold_out_scored_pairs
    from training.data.loading import load_dataset

    data = load_dataset(config.train.data.path, config.train.data.type, config.train.data.columns)
    split = stages.run(
        "held-out split",
        hold_out_scored_pairs
        if getattr(data, "dataset_type", None) is DatasetType.STS
        else hold_out_by_anchor,
        data,
        run.root / "heldout",
        config.evaluation.holdout_fraction,
        config.train.seed,
    )
    stages.note(**split.to_dict())
    progress(f"evaluation: {split.describe()}")
    config = config.with_holdout(split.train_path, split.eval_data)
    leakage = data_gate(config.train, run.root / "heldout" / "data-gate")
    if not leakage.passed:
        stages.records[-1].status = "blocked"
        raise StageBlocked(
            f"the held-out split failed the data gate (leakage between its sides); see "
            f"{run.root / 'heldout' / 'data-gate' / 'report.json'}"
        )
    return config, split


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


def _compatibility(config: PipelineConfig, run: RunPaths, quiet: bool, progress: Progress):
    """Answer in older versions' spaces too (gates/compat/stage.py), fitted on the training data."""
    from gates.compat.stage import run_compatibility
    from training.data.loading import load_dataset

    data = config.train.data
    return run_compatibility(
        run,
        config.promotion.registry,
        load_dataset(data.path, data.type, data.columns),
        config.evaluation_data(),
        config.evaluation.split,
        split=data.split,
        mode=config.compatibility.mode,
        versions=config.compatibility.versions,
        int8=config.export.int8,
        cache_dir=config.cache_dir(),
        quiet=quiet,
        progress=progress,
    )


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


def _eval_devices(config: PipelineConfig) -> dict[str, str]:
    """Where the gate's evaluation runs: torch on the training device; onnxruntime on the same one when it was
    asked for by name (then a CPU-only onnxruntime is an error), or its CUDA provider when present under auto."""
    from training.device import resolve_device

    device = resolve_device(config.train.device)
    return {"device": device.name, "onnx_device": "auto" if device.requested == "auto" else device.name}


def _eval_path(config: PipelineConfig) -> Path | None:
    return config.train.data.eval_path or (config.evaluation_data() if config.evaluation.data else None)


def _tokenizer(config: PipelineConfig):
    from training.models import resolve_model_path

    return resolve_model_path(config.train.base_model)


def _build_reference(config: PipelineConfig, run: RunPaths) -> tuple[Path | None, str]:
    """The drift reference for this version: the domain's queries, those the model never saw marked held-out (they
    calibrate every signal), and a random corpus sample, embedded through the served runtime at the smallest
    exported dim, to which every served request can be cut exactly. -> (folder, "") or (None, why there is none);
    the note also names the signals kept out of the alarm for lack of held-out queries."""
    try:
        from gates.pipeline.drift_texts import pipeline_reference_texts
        from service.drift.calibration import MIN_REFERENCE_QUERIES
        from service.drift.reference_builder import build_reference
    except ImportError:  # drift monitoring not installed in this build
        return None, "drift monitoring is not installed; promoted without a drift reference"
    import json

    texts = pipeline_reference_texts(config)
    judged = len(texts.queries) + len(texts.held_out_queries)
    if judged < MIN_REFERENCE_QUERIES:
        # Too few queries to calibrate a drift threshold; quality is what the gate judged, so promote anyway.
        return None, (
            f"only {judged} judged queries (calibration needs {MIN_REFERENCE_QUERIES}): promoted "
            f"without a drift reference, so this version is not drift-monitored"
        )
    dims = json.loads((run.onnx / "embedder.json").read_text())["dims"]
    out = run.root / "reference"
    summary = build_reference(
        run.onnx,
        texts.queries,
        texts.corpus_sample,
        out,
        dim=min(dims),
        held_out_queries=texts.held_out_queries,
    )
    return out, "; ".join(f"drift signal {name}: {why}" for name, why in summary.excluded.items())


def write_manifest(run: RunPaths) -> None:
    """sha256 and size of every file in the run (checkpoints excluded: they are deleted after training)."""
    from service.registry.registry import build_manifest

    write_json_atomic(
        run.manifest, build_manifest(run.root, {"run_id": run.run_id}, skip_prefixes=("train/checkpoints/",))
    )
