"""Early stopping on the dev set, on by default: a run stops once the dev metric has not improved beyond the dev
set's noise for `patience` evaluations, and the best checkpoint (not the last) becomes the model.

Why: the schedule in training/finetune/defaults.py gives small sets many epochs, and dev NDCG@10 measured on three domains
peaked at epoch 1-3 of 9-10; the rest was wall time spent overfitting. Why "beyond noise": on SciFact the dev mean
crept up by 0.002-0.005 after epoch 3 (0.784, 0.786, 0.789, dip, dip, 0.791 at epoch 8 of 10), each new high within
the noise of 80 dev queries, and every such high restarted transformers' `EarlyStoppingCallback` (it counts any
rise), so the run trained all 10 epochs for +0.007 over epoch 3. With retrieval dev sets (per-query scores) a gain
counts only when the paired bootstrap over dev queries (training/finetune/dev_noise.py) puts it above zero, measured against
the last evaluation that counted, so a slow climb that adds up beyond noise still counts; STS dev sets keep
transformers' callback (no per-query scores). The best checkpoint is still the Trainer's dev-best one, weighed
against the last by training/finetune/checkpoint_choice.py. The patience is chosen from the run: a quarter of the scheduled
evaluations (a short run stops after two flat ones, a long one tolerates a dip), one more when the dev set is small
(fewer than SMALL_DEV queries, so a single evaluation is noisy), between MIN_PATIENCE and MAX_PATIENCE.
"""

from __future__ import annotations

import math

from transformers import TrainerCallback

MIN_PATIENCE = 2
MAX_PATIENCE = 5
SMALL_DEV = 50


def patience_from_data(evaluations: int, dev_size: int, beyond_noise: bool = True) -> tuple[int, str]:
    """(patience in evaluations, why) for a run with `evaluations` scheduled dev evaluations."""
    if evaluations < 1 or dev_size < 1:
        raise ValueError(
            f"need at least one scheduled evaluation and one dev item, got {evaluations} and {dev_size}"
        )
    patience = math.ceil(evaluations / 4) + (1 if dev_size < SMALL_DEV else 0)
    patience = min(MAX_PATIENCE, max(MIN_PATIENCE, patience))
    return patience, (
        f"stop after {patience} evaluations without a dev gain{' beyond noise' if beyond_noise else ''} "
        f"({evaluations} scheduled, "
        f"{dev_size} dev items{'; small dev set: +1' if dev_size < SMALL_DEV else ''})"
    )


def stops_beyond_noise(evaluator) -> bool:
    """Whether `evaluator` keeps per-query dev scores by step (retrieval dev sets), which beyond-noise stopping
    needs; an STS dev set does not, so there any rise counts (transformers' own callback)."""
    return getattr(evaluator, "per_query_history", None) is not None


def early_stopping_callback(patience: int, evaluator=None, seed: int = 0):
    """Beyond-noise stopping when `evaluator` keeps per-query dev scores by step, else transformers' own."""
    if not stops_beyond_noise(evaluator):
        from transformers import EarlyStoppingCallback

        return EarlyStoppingCallback(early_stopping_patience=patience)
    return BeyondNoiseStopping(patience, evaluator.per_query_history, seed)


class BeyondNoiseStopping(TrainerCallback):
    """Stops training after `patience` evaluations in a row without a paired dev gain beyond noise over `bar`, the
    per-query scores of the last evaluation that counted (the first one counts)."""

    def __init__(self, patience: int, history: dict, seed: int = 0):
        self.patience, self.history, self.seed = patience, history, seed
        self.bar: tuple[int, object] | None = None  # (step, per-query scores)
        self.waited = 0
        self.gains: list[
            dict
        ] = []  # per evaluation after the first: step, gain over the bar, whether it counted

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        scores = self.history.get(state.global_step)
        if scores is None:  # not a dev evaluation of ours (or a resumed run's first step): nothing to compare
            return control
        if self.bar is None:
            self.bar = (state.global_step, scores)
            return control
        from training.finetune.dev_noise import paired_gain

        gain = paired_gain(scores, self.bar[1], self.seed)
        self.gains.append(
            {
                "step": state.global_step,
                "over_step": self.bar[0],
                **gain.to_dict(),
                "counted": gain.beyond_noise,
            }
        )
        if gain.beyond_noise:
            self.bar, self.waited = (state.global_step, scores), 0
        else:
            self.waited += 1
            control.should_training_stop = self.waited >= self.patience
        return control

    def summary(self) -> dict:
        """The last evaluation whose gain counted, and each evaluation's gain over the bar it was measured on."""
        return {"last_gain_beyond_noise_at_step": self.bar[0] if self.bar else None, "gains": self.gains}
