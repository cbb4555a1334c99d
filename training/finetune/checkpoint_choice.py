"""Which checkpoint becomes the model: the dev-best one only when it beats the last one beyond the dev set's noise.

The Trainer's `load_best_model_at_end` takes the evaluation with the highest mean dev NDCG@10, however small its
lead; on 30-80 dev queries the top of a flat curve is mostly noise. Here the best checkpoint is kept only when its
per-query gain over the last saved checkpoint is beyond noise (training/finetune/dev_noise.py); otherwise the last one (the
conservative option: the most training on the domain, no selection on the dev set) is loaded instead. With early
stopping on, the last checkpoint is `patience` evaluations after the best, so the two are close in training time.
Applies to retrieval dev sets (per-query scores); an STS dev set keeps the Trainer's choice.
"""

from __future__ import annotations

from pathlib import Path


def choose_checkpoint(trainer, evaluator, model, config) -> tuple[object, str | None]:
    """(the model to keep, why); `model` is the Trainer's (best-loaded) model."""
    history = getattr(evaluator, "per_query_history", None)
    best = trainer.state.best_model_checkpoint
    if not history or best is None:
        return model, None
    from training.finetune.dev_noise import paired_gain

    best_step = _step(best)
    last_step = max(history)
    if best_step == last_step or best_step not in history:
        return model, f"checkpoint at step {best_step}: the best dev evaluation is the last one"
    gain = paired_gain(history[best_step], history[last_step], config.seed)
    if gain.beyond_noise:
        return (
            model,
            f"best dev checkpoint (step {best_step}) kept: {gain.describe()} over the last (step {last_step})",
        )
    last = Path(best).parent / f"checkpoint-{last_step}"
    if not last.is_dir():
        return model, (
            f"best dev checkpoint (step {best_step}) kept: the last (step {last_step}) was not saved "
            f"to compare with"
        )
    from training.models import load_sentence_transformer

    kept = load_sentence_transformer(str(last), config.max_seq_length, device=str(model.device))
    # The run's prompts live on the model in memory (training/prompts.py); a checkpoint folder does not carry
    # configured ones, and without them the export would serve a prompt-trained model without its prompts.
    kept.prompts = {**dict(kept.prompts or {}), **dict(getattr(model, "prompts", None) or {})}
    return kept, (
        f"last checkpoint (step {last_step}) kept: the best dev checkpoint (step "
        f"{best_step}) led by {gain.describe()}"
    )


def _step(checkpoint: str) -> int:
    return int(Path(checkpoint).name.rsplit("-", 1)[-1])
