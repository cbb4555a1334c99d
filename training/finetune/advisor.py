"""The hyperparameter advisor: reads a run's training log and says what to change, in the seed guide's terms.

    from training.finetune.advisor import advise
    from training.finetune.train_log import read_log
    for tip in advise(read_log("artifacts/runs/<run>/train/train_log.jsonl")): print(tip.message)

Three patterns, each with the evidence that triggered it:
- plateau: the loss fell early and then stopped falling -> the learning rate is likely too low for the data
  (or the task is learned: compare with the dev metric);
- oscillation: the loss jumps around its own trend -> learning rate too high, or too short a warmup
  (15-20% of steps);
- overfitting: the dev metric fell from its peak while the training loss kept falling -> fewer epochs (the best
  checkpoint is already kept; set epochs to about the peak's epoch to save time);
- saturation: the dev metric peaked in the first half of the epochs and the rest stayed within noise of it ->
  fewer epochs score as well in a fraction of the time (the task was learned early).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_LOSS_POINTS = 12
PLATEAU_EARLY_SHARE = 0.85  # > 85% of the whole run's loss reduction happened in its first 30% of steps
OSCILLATION_SWING = 0.25  # residual std around the moving trend / the trend's whole fall
OVERFIT_DROP = 0.01  # dev metric this far (absolute) below its peak at the end


@dataclass(frozen=True)
class Advice:
    kind: str  # plateau | oscillation | overfitting | saturation
    message: str
    evidence: dict

    def to_dict(self) -> dict:
        return dict(vars(self))


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    window = max(1, min(window, len(values)))
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def _kept(checkpoint_choice: str | None) -> str:
    if checkpoint_choice is None:
        return "the best checkpoint was kept"
    if checkpoint_choice.startswith("last"):
        return "the last checkpoint was kept (the peak's lead was within the dev set's noise)"
    return "the best checkpoint was kept"


def advise(
    records: list[dict], dev_metric: str = "eval_dev_ndcg@10_mean", checkpoint_choice: str | None = None
) -> list[Advice]:
    """Tips from a training log. `checkpoint_choice`: what training.finetune.checkpoint_choice decided (its sentence starts
    with "best" or "last"), so the overfitting tip says which checkpoint was kept instead of assuming the best."""
    losses = np.array([r["loss"] for r in records if "loss" in r], dtype=float)
    steps = [r["step"] for r in records if "loss" in r]
    tips: list[Advice] = []
    if len(losses) >= MIN_LOSS_POINTS:
        window = max(3, len(losses) // 10)
        trend = _moving_average(losses, window)
        cut = int(len(trend) * 0.3)
        start, early, end = trend[window - 1], trend[cut], trend[-1]
        total_drop = start - end
        early_share = (start - early) / total_drop if total_drop > 0 else 0.0
        if total_drop > 0 and early_share > PLATEAU_EARLY_SHARE:
            tips.append(
                Advice(
                    "plateau",
                    (
                        f"loss plateaued early: {early_share:.0%} of its fall happened in the first 30% of steps "
                        f"({start:.3f} -> {early:.3f}, then {end:.3f} at the end); try a higher learning_rate (e.g. 2x), "
                        f"or check the dev metric: the task may be learned already"
                    ),
                    {
                        "early_share": round(early_share, 4),
                        "loss": [round(start, 4), round(early, 4), round(end, 4)],
                        "steps": [steps[0], steps[cut], steps[-1]],
                    },
                )
            )
        # Swings are measured against how far the loss fell, not its level: a converged MNRL loss is small and
        # each logged value is a few batches' mean, so it is noisy relative to itself in every healthy run.
        residual = losses[window:] - trend[window:]
        fall = max(float(trend[window - 1] - trend.min()), 1e-9)
        swing = float(residual.std() / fall)
        if swing > OSCILLATION_SWING:
            tips.append(
                Advice(
                    "oscillation",
                    (
                        f"loss oscillates: its swings around the trend (std {residual.std():.3f}) are {swing:.0%} of how "
                        f"far it fell ({fall:.3f}); lower the learning_rate (e.g. 0.5x) or lengthen warmup_ratio to "
                        f"0.15-0.2"
                    ),
                    {
                        "swing": round(swing, 4),
                        "residual_std": round(float(residual.std()), 4),
                        "fall": round(fall, 4),
                    },
                )
            )
    dev = [(r["epoch"], r[dev_metric]) for r in records if dev_metric in r]
    if len(dev) >= 3 and len(losses) >= 2:
        values = np.array([v for _, v in dev])
        peak = int(values.argmax())
        drop = float(values[peak] - values[-1])
        loss_after_peak = [r["loss"] for r in records if "loss" in r and r["epoch"] >= dev[peak][0]]
        loss_falling = len(loss_after_peak) >= 2 and loss_after_peak[-1] < loss_after_peak[0]
        if peak < len(values) - 1 and drop > OVERFIT_DROP and loss_falling:
            tips.append(
                Advice(
                    "overfitting",
                    (
                        f"overfitting: the dev metric peaked at {values[peak]:.4f} (epoch {dev[peak][0]:g}) and fell to "
                        f"{values[-1]:.4f} while the training loss kept falling; {_kept(checkpoint_choice)}, and "
                        f"epochs: {max(1, round(dev[peak][0]))} would reach it in less time"
                    ),
                    {
                        "peak_epoch": dev[peak][0],
                        "peak": round(float(values[peak]), 5),
                        "last": round(float(values[-1]), 5),
                    },
                )
            )
        elif len(values) >= 4 and dev[peak][0] <= dev[-1][0] / 2 and drop <= OVERFIT_DROP:
            peak_epoch, last_epoch = dev[peak][0], dev[-1][0]
            tips.append(
                Advice(
                    "saturation",
                    (
                        f"the dev metric peaked at {values[peak]:.4f} in epoch {peak_epoch:g} of {last_epoch:g} and the "
                        f"later epochs stayed within {OVERFIT_DROP} of it: they bought nothing; epochs: "
                        f"{max(1, round(peak_epoch))} would likely score as well in about {peak_epoch / last_epoch:.0%} of the "
                        f"training time"
                    ),
                    {
                        "peak_epoch": peak_epoch,
                        "epochs": last_epoch,
                        "peak": round(float(values[peak]), 5),
                        "last": round(float(values[-1]), 5),
                    },
                )
            )
    return tips
