"""Fine-tune a SentenceTransformer from a TrainConfig into a run directory.

    embedgate train my_config.yaml               # or: python -c "from training.finetune.train import train; ..."
    embedgate train --resume artifacts/runs/<run_id>

Runs unchanged under `torchrun --nproc_per_node N` / `accelerate launch` (the Trainer does data-parallel; only
rank 0 writes the run directory's files).
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from training.config import PromptsConfig, TrainConfig, load_config
from training.errors import ConfigError
from training.finetune.defaults import resolve
from training.finetune.losses import build_loss, choose_loss
from training.finetune.prepare import TrainingData, prepare_training_data
from training.models import is_main_process, load_sentence_transformer
from training.prompts import column_prompts, resolve_prompts, strip_prepared, strip_prompt_columns
from training.run_dir import RunPaths, new_run_dir, open_run_dir, write_json_atomic


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    config: dict
    reasons: dict[str, str]
    loss: str
    loss_reason: str
    train_rows: int
    steps: int
    train_seconds: float
    examples_per_second: float
    best_checkpoint: str | None
    best_metric: float | None
    dev_metrics: dict[str, float] = field(default_factory=dict)
    mining: dict | None = None
    rotation: dict | None = None
    advice: list[dict] = field(default_factory=list)
    early_stopping: dict | None = None  # patience, why, whether it stopped, epochs run of epochs scheduled
    checkpoint_choice: str | None = (
        None  # which checkpoint became the model and why (training/finetune/checkpoint_choice.py)
    )
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["run_dir"] = str(self.run_dir)
        return out


def train(
    config: TrainConfig | None = None,
    *,
    resume: str | Path | None = None,
    run_dir: Path | None = None,
    progress: bool = True,
    callbacks: list | None = None,
    check_mined=None,
    keep_checkpoints: bool = True,
    report=None,
    embedding_cache: Path | None = None,
    gradient_checkpointing: bool = False,
    data=None,
) -> TrainResult:
    """Train; `resume` continues an interrupted run from its last checkpoint with its recorded config.

    check_mined: called with the mined hard_negatives.jsonl before training (the pipeline passes the data gate
    here; it raises to stop). keep_checkpoints=False deletes train/checkpoints once the model is saved.
    report: called with one readable line per stage step and dev evaluation (the pipeline's progress).
    embedding_cache: folder of training.embedding_cache; mining's base-model encodings are read from / kept there.
    gradient_checkpointing: keep only each layer's input during the forward pass and recompute the rest in the
        backward pass: the same gradients (dropout's random state is replayed) at about half the peak memory of a
        step, for ~25% more CPU per step (measured in docs/performance.md, "Pipeline cost").
    data: `config.data` already loaded (the pipeline loads it once for every stage that reads it); read from
        config.data when None.
    """
    if resume is not None:
        paths = open_run_dir(resume)
        config = load_config(paths.config)
    elif config is None:
        raise ConfigError("train() needs a config (or resume=RUN_DIR)")
    elif run_dir is not None:
        paths = RunPaths(Path(run_dir))
        paths.root.mkdir(parents=True, exist_ok=True)
    else:
        paths = new_run_dir(config)

    from transformers import set_seed

    set_seed(config.seed)
    from training.device import resolve_device

    device = resolve_device(config.device)
    if device.note and report is not None:
        report(f"  {device.note}")
    if device.is_cuda:
        import torch

        torch.cuda.set_device(device.name)  # the Trainer places the model on the current CUDA device
    model = load_sentence_transformer(config.base_model, config.max_seq_length, device=device.name)
    if data is None:
        from training.data.loading import load_dataset

        data = load_dataset(config.data.path, config.data.type, config.data.columns)
    prepared = prepare_training_data(data, config.data.split, config.dev_fraction, config.seed)
    resolved = resolve(config, len(prepared.train), model.get_embedding_dimension())
    config = resolved.config
    prompts = resolve_prompts(config.prompts.model_dump() if config.prompts else None, model)
    config = config.model_copy(update={"prompts": PromptsConfig(**prompts)})  # the run records what it used
    prepared = strip_prepared(prepared, prompts)  # texts that already carry a prompt: it is added once, later
    if is_main_process() and resume is None:
        _write_config(paths, config, resolved.reasons)

    encode, cache = _mining_encoder(config, model, embedding_cache, quiet=report is None)
    if report is not None and config.mining.strategy != "none" and prepared.pair_like:
        report(f"  mining: {len(prepared.train)} rows against {len(prepared.corpus)} corpus texts")
    train_rows, stages, mining = _training_rows(config, prepared, model, paths, resume is not None, encode)
    if mining is not None and cache is not None:
        mining["embedding_cache"] = {"hits": cache.stats.hits, "misses": cache.stats.misses}
    row_prompts = column_prompts(train_rows.column_names, prompts)
    train_rows = strip_prompt_columns(train_rows, row_prompts)  # the trainer adds each prompt, exactly once
    if mining is not None and check_mined is not None and is_main_process():
        check_mined(paths.mined / "hard_negatives.jsonl")
    choice = choose_loss(prepared.dataset_type, config.loss, config.cached, len(train_rows))
    loss = build_loss(
        model,
        choice,
        config.matryoshka_dims if config.matryoshka else None,
        config.matryoshka_weights,
        config.mini_batch_size or 32,
    )
    evaluator = _dev_evaluator(prepared, config)
    args = _training_arguments(
        config, paths, choice, stages, evaluator, len(train_rows), progress, row_prompts, device
    )
    if gradient_checkpointing:
        # Non-reentrant: also correct when the inputs need no gradient (frozen embeddings).
        args.gradient_checkpointing = True
        args.gradient_checkpointing_kwargs = {"use_reentrant": False}
    stopper, stopping = _early_stopping(config, args, prepared, len(train_rows), evaluator)
    if report is not None:
        from training.finetune.progress import epoch_reporter

        callbacks = [
            epoch_reporter(report, _best_metric_name(evaluator) if evaluator else None),
            *(callbacks or []),
        ]

    from sentence_transformers import SentenceTransformerTrainer

    from training.finetune.advisor import advise
    from training.finetune.train_log import (
        JsonlLogCallback,
        plot_loss_curve,
        read_log,
        truncate_log_after_checkpoint,
    )

    checkpoint = _last_checkpoint(paths) if resume is not None else None
    if checkpoint is not None and is_main_process():
        truncate_log_after_checkpoint(paths.train_log, checkpoint)
    if not progress:
        import datasets

        datasets.disable_progress_bars()
    with _model_card_bar_silenced(not progress):
        trainer = SentenceTransformerTrainer(
            model=model,
            args=args,
            train_dataset=train_rows,
            loss=loss,
            evaluator=evaluator,
            callbacks=[JsonlLogCallback(paths.train_log), *stopper, *(callbacks or [])],
        )
    if not progress:  # no bars and no printed log dicts: the pipeline reports stages itself
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds = time.perf_counter() - started
    if stopping is not None:
        stopping |= {
            "stopped": trainer.state.global_step < trainer.state.max_steps,
            "epochs_run": round(float(trainer.state.epoch or 0), 2),
            "epochs_scheduled": config.epochs,
        }
        if stopper and hasattr(stopper[0], "summary"):
            stopping |= stopper[0].summary()
    rotation = checkpoint_choice = None
    dev_metrics = {}
    if is_main_process():
        from training.finetune.checkpoint_choice import choose_checkpoint

        model, checkpoint_choice = choose_checkpoint(trainer, evaluator, model, config)
        model, rotation, dev_metrics = _rotate_and_score(model, prepared, config, evaluator)
    if is_main_process():
        model.save(str(paths.model), safe_serialization=True)
        plot_loss_curve(paths.train_log, paths.loss_curve)
        if not keep_checkpoints:
            import shutil

            shutil.rmtree(paths.checkpoints, ignore_errors=True)  # only needed to resume; ~3x the model each
    result = TrainResult(
        run_dir=paths.root,
        config=config.to_yaml_dict(),
        reasons=resolved.reasons,
        loss=choice.name,
        loss_reason=choice.reason,
        train_rows=len(train_rows),
        steps=int(output.global_step),
        train_seconds=round(seconds, 2),
        examples_per_second=round(output.metrics.get("train_samples_per_second", 0.0), 2),
        best_checkpoint=trainer.state.best_model_checkpoint,
        best_metric=trainer.state.best_metric,
        dev_metrics={k: round(float(v), 5) for k, v in dev_metrics.items()},
        mining=mining,
        rotation=rotation.to_dict() if rotation else None,
        advice=[
            tip.to_dict() for tip in advise(read_log(paths.train_log), checkpoint_choice=checkpoint_choice)
        ],
        early_stopping=stopping,
        checkpoint_choice=checkpoint_choice,
        notes=[*data_notes(data), *prepared.notes],
    )
    if is_main_process():
        write_json_atomic(paths.train / "summary.json", result.to_dict())
    return result


@contextlib.contextmanager
def _model_card_bar_silenced(silenced: bool):
    """The Trainer's constructor fills the model card's widget examples behind a tqdm bar ("Computing widget
    examples") that neither `datasets.disable_progress_bars` nor TQDM_DISABLE (read when tqdm is imported) turns
    off; in a pipeline log it is a stray carriage-return line. sentence-transformers has no switch, so the bar is
    disabled through the module's own `tqdm` name while the Trainer is built."""
    if not silenced:
        yield
        return
    from sentence_transformers.base import model_card

    original = model_card.tqdm
    model_card.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        model_card.tqdm = original


def data_notes(data) -> list[str]:
    return list(getattr(data, "notes", []))


def _distributed() -> bool:
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _write_config(paths: RunPaths, config: TrainConfig, reasons: dict[str, str]) -> None:
    import yaml

    paths.train.mkdir(parents=True, exist_ok=True)
    tmp = paths.config.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(config.to_yaml_dict(), sort_keys=False), encoding="utf-8")
    tmp.replace(paths.config)
    write_json_atomic(paths.train / "defaults.json", reasons)


def _mining_encoder(config: TrainConfig, model, cache_dir: Path | None, quiet: bool):
    """-> (texts -> unit vectors from the base model under a progress bar, the cache or None). Through the
    embedding cache when given: keyed by the base model folder's sha256, so the next run on the same data and
    model encodes nothing."""
    from training.finetune.progress import encode_with_bar
    from training.prompts import model_prompts

    def encode(texts, role):
        # encode_query / encode_document add the model's prompt for that side (training/prompts.py).
        method = model.encode_query if role == "query" else model.encode_document

        def raw(batch):
            return method(
                list(batch),
                batch_size=64,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )

        return encode_with_bar(raw, texts, f"mining: encoding {role}s", quiet=quiet)

    if cache_dir is None:
        return encode, None
    from training.embedding_cache import EmbeddingCache, folder_fingerprint
    from training.models import resolve_model_path

    cache = EmbeddingCache(Path(cache_dir) / "embeddings")
    identity = folder_fingerprint(resolve_model_path(config.base_model))
    full = model.get_embedding_dimension()
    prompts = model_prompts(model)

    def cached(texts, role):
        # The prompt changes the vectors, so it is part of the key.
        extra = f"max_seq_length={model.max_seq_length};prompt={prompts[role]!r}"
        return cache.encode(
            texts,
            model=identity,
            backend="torch",
            dim=full,
            encode=lambda batch: encode(batch, role),
            extra=extra,
            label="mining",
        )

    return cached, cache


def _training_rows(
    config: TrainConfig, prepared: TrainingData, model, paths: RunPaths, resuming: bool, encode=None
):
    """Mined rows when mining is on (re-used verbatim on resume, so a resumed run sees identical data)."""
    from training.mining.for_training import mine_training_rows, resolve_strategy

    strategy = resolve_strategy(config.mining.strategy, prepared)
    if strategy in ("none", "contradiction") or not prepared.pair_like:
        return prepared.train, None, None  # NLI triplets are already (anchor, positive, negative) rows
    saved = paths.mined / "hard_negatives.jsonl"
    if resuming and saved.is_file():
        mined = _load_mined(paths)
    else:
        mining_config = config.mining.model_copy(update={"strategy": strategy})
        mined = mine_training_rows(prepared, mining_config, model, seed=config.seed, encode=encode)
        if is_main_process():
            mined.save(paths.mined)
    return mined.to_hf_dataset(), mined.stages or None, mined.summary()


def _rotate_and_score(model, prepared: TrainingData, config: TrainConfig, evaluator):
    """(model, rotation decision, dev metrics) for the kept checkpoint. The dev evaluation already encoded the
    whole dev corpus with this very model (the best or the last step), so the rotation's decision and the final dev
    metrics reuse it: on SciFact that is two of the run's ~5,000-text corpus encodings (~170 s each on 2 cores)."""
    from training.matryoshka.rotation import add_rotation, decide_rotation, model_encoder

    known = evaluator.encodings_of(model) if hasattr(evaluator, "encodings_of") else {}
    matrix, decision = decide_rotation(
        model_encoder(model, known=known),
        model.get_embedding_dimension(),
        _rotation_data(prepared),
        _dev_dims(config),
        config.rotation,
        config.seed,
        config.adaptor,
    )
    if matrix is not None:
        model = add_rotation(model, matrix)
    if evaluator is None:
        return model, decision, {}
    if known:
        metrics = evaluator.metrics_from(known, matrix)
        evaluator.store_metrics_in_model_card_data(model, metrics)
        return model, decision, metrics
    return model, decision, evaluator(model)


def _rotation_data(prepared: TrainingData):
    """What the rotation is fitted on: the domain's texts as training saw them, and the dev anchors to decide."""
    from training.matryoshka.rotation import RotationData

    columns = prepared.train.column_names
    texts = list(prepared.corpus)
    for column in ("sentence1", "sentence2", "premise"):  # texts without a pair: PCA sample only
        if column in columns:
            texts += list(prepared.train[column])
    pairs = (
        list(zip(prepared.train["anchor"], prepared.train["positive"], strict=True))
        if prepared.pair_like
        else []
    )
    from training.data.general_texts import load_general_texts

    dev = prepared.dev or {}
    dev_queries = list(dev["queries"]) if dev.get("kind") == "retrieval" else []
    # Everyday texts join the PCA's sample so the small dims keep serving other domains (issue 30).
    return RotationData(texts, pairs, prepared.labelled, dev_queries, general_texts=load_general_texts())


def _dev_dims(config: TrainConfig) -> list[int]:
    return list(config.matryoshka_dims if config.matryoshka else config.matryoshka_dims[:1])


def _load_mined(paths: RunPaths):
    from training.mining import MinedSet

    rows = [
        json.loads(line)
        for line in paths.mined.joinpath("hard_negatives.jsonl").read_text().splitlines()
        if line.strip()
    ]
    if not rows:
        raise ConfigError(
            f"{paths.mined / 'hard_negatives.jsonl'} is empty: the interrupted run's mining did not "
            f"finish; start a new run instead of resuming this one"
        )
    summary = json.loads(paths.mined.joinpath("mining.json").read_text())
    negs = sorted((k for k in rows[0] if k.startswith("negative_")), key=lambda k: int(k.split("_")[1]))
    return MinedSet(
        [r["anchor"] for r in rows],
        [r["positive"] for r in rows],
        [[r[k] for k in negs] for r in rows],
        summary["strategy"],
        [(s["name"], s["start"], s["end"]) for s in summary["stages"]],
        {k: v for k, v in summary.items() if k not in ("strategy", "rows", "num_negatives", "stages")},
    )


def _dev_evaluator(prepared: TrainingData, config: TrainConfig):
    dev = prepared.dev
    if dev is None:
        return None
    if dev["kind"] == "sts":
        from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

        rows = dev["rows"]
        prompt = (config.prompts.query if config.prompts else None) or ""  # symmetric: both sides are queries
        return EmbeddingSimilarityEvaluator(
            [prompt + t for t in rows["sentence1"]],
            [prompt + t for t in rows["sentence2"]],
            [s / 5.0 for s in list(rows["score"])],
            name="dev",
        )
    from training.finetune.dev_eval import MatryoshkaRetrievalEvaluator

    return MatryoshkaRetrievalEvaluator(dev["queries"], dev["corpus"], dev["relevant"], _dev_dims(config))


def _training_arguments(
    config: TrainConfig,
    paths: RunPaths,
    choice,
    stages,
    evaluator,
    n_rows: int,
    progress: bool,
    prompts: dict[str, str] | None = None,
    device=None,
):
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    steps_per_epoch = max(1, -(-n_rows // config.batch_size))
    total_steps = config.max_steps or int(steps_per_epoch * config.epochs)
    # Once per epoch (twice for a single epoch): each evaluation encodes the dev corpus, seconds on CPU.
    per_epoch = steps_per_epoch if config.epochs >= 2 else max(1, steps_per_epoch // 2)
    eval_steps = config.eval_steps or max(1, min(per_epoch, total_steps))
    if stages:
        from training.finetune.curriculum import CurriculumBatchSampler

        sampler = functools.partial(CurriculumBatchSampler, stages=stages)
    elif choice.uses_in_batch_negatives:
        sampler = BatchSamplers.NO_DUPLICATES  # a duplicate in the batch would be a false in-batch negative
    else:
        sampler = BatchSamplers.BATCH_SAMPLER
    has_eval = evaluator is not None
    precision = device.autocast() if device is not None else None
    return SentenceTransformerTrainingArguments(
        # Only where a GPU is there to avoid: on a CPU-only machine use_cpu=True changes how torchrun's DDP is
        # wrapped (tests/training/finetune/test_ddp.py failed on the pooler's unused parameters with it).
        use_cpu=device is not None and not device.is_cuda and _cuda(),
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        output_dir=str(paths.checkpoints),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_ratio=config.warmup_ratio,
        weight_decay=config.weight_decay,
        batch_sampler=sampler,
        prompts=prompts or None,  # column -> prompt, prepended by sentence-transformers' data collator
        eval_strategy="steps" if has_eval else "no",
        eval_steps=eval_steps if has_eval else None,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=2,
        load_best_model_at_end=has_eval,
        metric_for_best_model=_best_metric_name(evaluator) if has_eval else None,
        greater_is_better=True,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
        disable_tqdm=not progress,
        save_safetensors=True,
        dataloader_drop_last=False,
        dataloader_pin_memory=_cuda(),  # pinning only helps host->GPU copies
        ddp_backend="gloo" if _distributed() and not _cuda() else None,
        ddp_find_unused_parameters=False if _distributed() else None,
    )


def _early_stopping(
    config: TrainConfig, args, prepared: TrainingData, n_rows: int, evaluator=None
) -> tuple[list, dict | None]:
    """Stopping on dev gains beyond noise (training/finetune/early_stopping.py) with the patience from the data, when there
    is a dev set to watch."""
    if not config.early_stopping or args.eval_strategy == "no":
        return [], None
    from training.finetune.early_stopping import (
        early_stopping_callback,
        patience_from_data,
        stops_beyond_noise,
    )

    total = (
        args.max_steps if args.max_steps > 0 else int(max(1, -(-n_rows // config.batch_size)) * config.epochs)
    )
    beyond_noise = stops_beyond_noise(evaluator)
    patience, why = patience_from_data(
        max(1, -(-total // args.eval_steps)), prepared.dev["size"], beyond_noise
    )
    if config.early_stopping_patience is not None:
        patience = config.early_stopping_patience
        why = (
            f"stop after {patience} evaluations without a dev gain{' beyond noise' if beyond_noise else ''} "
            "(configured)"
        )
    callback = early_stopping_callback(patience, evaluator, config.seed)
    return [callback], {"patience": patience, "reason": why}


def _best_metric_name(evaluator) -> str:
    """The Trainer's key for the evaluator's primary metric: evaluators prefix their name on first call."""
    primary = evaluator.primary_metric
    name = getattr(evaluator, "name", "")
    if name and not primary.startswith(f"{name}_"):
        primary = f"{name}_{primary}"
    return f"eval_{primary}"


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _last_checkpoint(paths: RunPaths) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not paths.checkpoints.is_dir():
        raise ConfigError(
            f"nothing to resume in {paths.root}: no checkpoints were saved "
            f"(train/checkpoints is missing); start a new run instead"
        )
    last = get_last_checkpoint(str(paths.checkpoints))
    if last is None:
        raise ConfigError(
            f"nothing to resume in {paths.root}: train/checkpoints holds no checkpoint-<step> folder"
        )
    return Path(last)
