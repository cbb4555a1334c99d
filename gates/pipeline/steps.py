"""The pipeline's stages, one function each: what the stage runs (through `Stages`, which times and records it),
what it notes in pipeline.json and what it tells the person watching. run.py calls them in order.

The training table is loaded once per run (`gated_data`) and handed to every stage that reads it: the data gate,
the held-out split, mining and training, the compatible spaces and the drift reference's trained texts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gates.pipeline.config import PipelineConfig
from gates.pipeline.stage_runner import Progress, StageBlocked, Stages
from training.run_dir import RunPaths


def gated_data(config: PipelineConfig, run: RunPaths, stages: Stages, progress: Progress):
    """Load the training table, pass it through the data gate, and hold out an eval set from it when the config
    has none. -> (the config the rest of the run uses, the training table, the held-out split or None)."""
    data, gate = stages.run("data gate", _load_and_gate, config.train, run.data)
    stages.note(report=str(run.data / "report.json"))
    progress(gate.summary)
    if not gate.passed:
        stages.records[-1].status = "blocked"
        raise StageBlocked(
            f"data gate failed: {len(gate.report.failures)} check(s); see {run.data / 'report.json'}"
        )
    if not config.needs_holdout():
        return config, data, None
    return _hold_out(config, run, stages, progress, data)


def _load_and_gate(train_config, out_dir: Path):
    """Read the training table (a read error is the data gate stage's error) and gate it. -> (table, outcome)."""
    from gates.pipeline.stages import data_gate
    from training.data.loading import load_dataset

    data = load_dataset(train_config.data.path, train_config.data.type, train_config.data.columns)
    return data, data_gate(train_config, out_dir, data=data)


def _hold_out(config: PipelineConfig, run: RunPaths, stages: Stages, progress: Progress, data: Any):
    """No BEIR folder: split the training table into train rows and an eval set in the run (pairs-like data by
    anchor into a BEIR folder; STS data by sentence into held-out scored pairs, gated on Spearman), then run the
    data gate's leakage check on the split. -> (the config using the split, its train rows, the split)."""
    from gates.pipeline.stages import data_gate
    from training.data.formats import DatasetType
    from training.data.holdout import hold_out_by_anchor
    from training.data.holdout_sts import hold_out_scored_pairs
    from training.data.loading import load_dataset

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
    # what the rest of the run trains on is the split's train file, read once (as any later command reads it)
    train_rows = load_dataset(config.train.data.path, config.train.data.type, config.train.data.columns)
    leakage = data_gate(config.train, run.root / "heldout" / "data-gate", data=train_rows)
    if not leakage.passed:
        stages.records[-1].status = "blocked"
        raise StageBlocked(
            f"the held-out split failed the data gate (leakage between its sides); see "
            f"{run.root / 'heldout' / 'data-gate' / 'report.json'}"
        )
    return config, train_rows, split


def mine_and_train(
    config: PipelineConfig, run: RunPaths, stages: Stages, data: Any, progress: Progress, quiet: bool
):
    """Mine hard negatives (the mined set must pass the data gate too), fine-tune, and say what training decided."""
    from gates.pipeline.stages import validate_mined
    from training.finetune.train import train
    from training.models import resolve_model_path

    def check_mined(path: Path) -> None:
        eval_path = config.train.data.eval_path or (
            config.evaluation_data() if config.evaluation.data else None
        )
        mined_gate = validate_mined(path, eval_path, resolve_model_path(config.train.base_model))
        if not mined_gate.passed:
            raise StageBlocked(
                f"the mined hard-negatives set failed the data gate; see "
                f"{path.parent / 'data-gate' / 'report.json'}"
            )

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
        data=data,
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
    for line in _training_decisions(trained):
        progress(line)
    return trained


def _training_decisions(trained) -> list[str]:
    """One line per decision training took: rotation, checkpoint, early stopping, advice."""
    lines = [f"rotation: {(trained.rotation or {}).get('reason', 'n/a')}"]
    if trained.checkpoint_choice:
        lines.append(f"checkpoint: {trained.checkpoint_choice}")
    stopping = trained.early_stopping
    if stopping:
        last_gain = stopping.get("last_gain_beyond_noise_at_step")
        lines.append(
            f"early stopping: {stopping['reason']}; ran {stopping['epochs_run']:g} of "
            f"{stopping['epochs_scheduled']:g} epochs"
            + (f"; the last dev gain beyond noise at step {last_gain}" if last_gain is not None else "")
        )
    return lines + [f"advice: {tip['message']}" for tip in trained.advice]


def export(config: PipelineConfig, run: RunPaths, stages: Stages, trained, progress: Progress) -> None:
    """One ONNX graph per Matryoshka dim, fp32 and int8 (+ fp16 on a GPU), each checked for parity."""
    from training.export.export_run import export_run

    exported = stages.run(
        "export",
        export_run,
        run.model,
        run.onnx,
        dims=config.export.dims or trained.config["matryoshka_dims"],
        int8=config.export.int8,
        fp16=config.export.wants_fp16(config.train.device),
    )
    stages.note(graphs=len(exported.graphs), fp16=(exported.fp16 or {}).get("status"))
    if exported.fp16 and exported.fp16["status"] == "refused":
        progress(f"  fp16: {exported.fp16['reason']}")


def evaluate(config: PipelineConfig, run: RunPaths, stages: Stages, progress: Progress, quiet: bool) -> None:
    """The exact served graphs against the baseline (the registry's champion, or the base model) on the eval set,
    and the general-domain STS check at every dim."""
    from gates.evaluation.evaluate import load_sts_set, run_evaluation
    from training.data.general_texts import rotation_fit_texts
    from training.device import resolve_device

    sts_path = config.general_sts()
    # the rotation's PCA is fitted on half the packaged general sentences: the check scores the other half only
    sts = (
        load_sts_set(sts_path, config.evaluation.sts_limit, rotation_fit_texts(sts_path))
        if sts_path
        else None
    )
    # torch on the training device; onnxruntime on the same one when it was asked for by name (then a CPU-only
    # onnxruntime is an error), or its CUDA provider when present under auto
    device = resolve_device(config.train.device)
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
        backends=tuple(b for b in config.evaluation.backends if b != "onnx-int8" or config.export.int8),
        sts=sts,
        cache_dir=config.cache_dir(),
        quiet=quiet,
        device=device.name,
        onnx_device="auto" if device.requested == "auto" else device.name,
    )
    stages.note(timings=evaluated.timings, baseline=evaluated.baseline.model.name, cache=evaluated.cache)
    if evaluated.cache:
        progress(
            f"  embedding cache: {evaluated.cache['hits']} hit(s), {evaluated.cache['misses']} encoded "
            f"({evaluated.cache['encoded_texts']} texts)"
        )


def gate(config: PipelineConfig, run: RunPaths, stages: Stages, holdout, progress: Progress):
    """The gate policy over the evaluation; a refusal is recorded in the registry's history and stops the run."""
    from gates.quality_gate.stage import run_gate

    decision = stages.run("gate", run_gate, run, config.gate.policy)
    stages.note(
        passed=decision.passed,
        serving_dim=decision.serving_dim,
        evaluation=holdout.describe() if holdout else str(config.evaluation_data()),
    )
    if holdout is not None:
        progress(f"evaluation: {holdout.describe()}")
    progress(decision.table())
    if decision.passed:
        return decision
    stages.records[-1].status = "blocked"
    if config.promotion.enabled and config.promotion.registry is not None:
        from gates.promotion import served_metrics
        from service.registry.registry import Registry

        Registry(config.promotion.registry).record_refusal(
            run_id=run.run_id,
            who=None,
            reason="pipeline: gate failed",
            metrics=served_metrics(decision.to_dict()),
        )
    reasons = "; ".join(f"{r.check} [{r.metric}]: {r.reason}" for r in decision.failures)
    raise StageBlocked(f"quality gate failed, not promoted: {reasons}")


def compatibility(
    config: PipelineConfig, run: RunPaths, stages: Stages, data: Any, progress: Progress, quiet: bool
) -> None:
    """Answer in older versions' spaces too (gates/compat/stage.py), fitted on the training data."""
    from gates.compat.stage import run_compatibility

    compat = stages.run(
        "compatibility",
        run_compatibility,
        run,
        config.promotion.registry,
        data,
        config.evaluation_data(),
        config.evaluation.split,
        split=config.train.data.split,
        mode=config.compatibility.mode,
        versions=config.compatibility.versions,
        int8=config.export.int8,
        cache_dir=config.cache_dir(),
        quiet=quiet,
        progress=progress,
    )
    stages.note(**compat.to_dict())
    if compat.skipped and config.compatibility.mode != "off":
        progress(f"compatibility: none built ({compat.skipped})")


def promote(config: PipelineConfig, run: RunPaths, stages: Stages, data: Any, webhook, progress: Progress):
    """The drift reference for the new version, then the version into the registry (champion, or staged as the
    candidate). -> (promotion result, the outcome's reason)."""
    from gates.promotion import promote_run

    reference, note = stages.run("drift reference", drift_reference, config, run, data)
    stages.note(reference=str(reference) if reference else None, note=note)
    if note:
        progress(f"drift reference: {note}")
    promoted = stages.run(
        "promote",
        promote_run,
        run,
        config.promotion.registry,
        reason="pipeline: gate passed",
        reference_dir=reference,
        mode=config.promotion.mode,
        webhook=webhook,
    )
    stages.note(**promoted.to_dict())
    reason = (
        f"{promoted.version} is the champion (was {promoted.previous or 'none'})"
        if promoted.alias == "champion"
        else f"{promoted.version} is staged as the candidate; {promoted.previous or 'none'} stays the "
        f"champion until `embedgate cutover {promoted.version}`"
    )
    return promoted, reason


def drift_reference(config: PipelineConfig, run: RunPaths, data: Any = None) -> tuple[Path | None, str]:
    """The drift reference for this version: the domain's queries, those the model never saw marked held-out (they
    calibrate every signal), and a random corpus sample, embedded through the served runtime at the smallest
    exported dim, to which every served request can be cut exactly. -> (folder, "") or (None, why there is none);
    the note also names the signals kept out of the alarm for lack of held-out queries.
    data: the loaded training table (read from the config when not given)."""
    try:
        from gates.pipeline.drift_texts import pipeline_reference_texts
        from service.drift.calibration import MIN_REFERENCE_QUERIES
        from service.drift.reference_builder import build_reference
    except ImportError:  # drift monitoring not installed in this build
        return None, "drift monitoring is not installed; promoted without a drift reference"
    import json

    texts = pipeline_reference_texts(config, train_data=data)
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
