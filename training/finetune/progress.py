"""Progress a person can read while training runs: one line per dev evaluation (epoch, step, loss, dev score,
elapsed, ETA) as it arrives, and a tqdm bar over the encodings that mining and evaluation do.

The Trainer's own tqdm bar and printed log dicts are for `embedgate train`; the pipeline turns them off and
passes `report` (a callable taking one line) instead, so its output stays a sequence of readable stage lines.
`report=None` is quiet. Bars only draw on a terminal (tqdm's `disable=None`), so logs and CI stay clean.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

Report = Callable[[str], None]


def epoch_reporter(report: Report, metric: str | None = None):
    """A TrainerCallback that calls `report` once when training starts and with a line after each dev evaluation
    (built here so importing this module does not import transformers)."""
    from transformers import TrainerCallback

    class EpochReporter(TrainerCallback):
        def __init__(self):
            self.started = time.perf_counter()
            self.last_loss: float | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()
            epochs = f" over {args.num_train_epochs:g} epoch(s)" if args.max_steps <= 0 else " (max_steps)"
            report(f"  training: {state.max_steps} steps{epochs}, batch {args.per_device_train_batch_size}")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.last_loss = float(logs["loss"])

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            report(
                epoch_line(state, metrics or {}, metric, self.last_loss, time.perf_counter() - self.started)
            )

    return EpochReporter()


def epoch_line(state, metrics: dict, metric: str | None, loss: float | None, elapsed: float) -> str:
    done = max(state.global_step, 1) / max(state.max_steps, 1)
    eta = elapsed / done - elapsed if done < 1 else 0.0
    score = metrics.get(metric) if metric else None
    best = f", best {state.best_metric:.4f}" if state.best_metric is not None and score is not None else ""
    loss_text = f"loss {loss:.4f}, " if loss is not None else ""
    name = metric.removeprefix("eval_").removeprefix("dev_") if metric else ""
    dev = f"dev {name} {score:.4f}{best}, " if score is not None else ""
    return (
        f"  epoch {state.epoch or 0:.2f} step {state.global_step}/{state.max_steps}: {loss_text}{dev}"
        f"{elapsed:.0f}s elapsed, ETA {eta:.0f}s"
    )


def encode_with_bar(
    encode: Callable[[Sequence[str]], np.ndarray],
    texts: Sequence[str],
    label: str,
    batch: int = 256,
    quiet: bool = False,
) -> np.ndarray:
    """`encode(texts)` in slices under a tqdm bar (texts/s and ETA); one call when quiet or not on a terminal."""
    from tqdm.auto import tqdm

    texts = list(texts)
    with tqdm(
        total=len(texts),
        desc=label,
        unit="text",
        disable=True if quiet else None,
        leave=False,
        dynamic_ncols=True,
    ) as bar:
        if bar.disable or len(texts) <= batch:
            return encode(texts)
        parts = []
        for start in range(0, len(texts), batch):
            parts.append(encode(texts[start : start + batch]))
            bar.update(len(parts[-1]))
    return np.concatenate(parts, axis=0)
