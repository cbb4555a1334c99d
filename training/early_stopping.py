"""Early stopping on the dev set, on by default: a run stops once the dev metric has not improved for `patience`
evaluations, and the best checkpoint (not the last) becomes the model.

Why: the schedule in training/defaults.py gives small sets many epochs, and dev NDCG@10 measured on three domains
peaked at epoch 1-3 of 9-10; the rest was wall time spent overfitting. The stopping itself is transformers'
`EarlyStoppingCallback` (it needs `load_best_model_at_end`, which finetune.py sets whenever there is a dev set);
only the patience is ours, chosen from the run: a quarter of the scheduled evaluations (a short run stops after
two flat ones, a long one tolerates a dip), one more when the dev set is small (fewer than SMALL_DEV queries, so a
single evaluation is noisy), between MIN_PATIENCE and MAX_PATIENCE.
"""

from __future__ import annotations

import math

MIN_PATIENCE = 2
MAX_PATIENCE = 5
SMALL_DEV = 50


def patience_from_data(evaluations: int, dev_size: int) -> tuple[int, str]:
    """(patience in evaluations, why) for a run with `evaluations` scheduled dev evaluations."""
    if evaluations < 1 or dev_size < 1:
        raise ValueError(
            f"need at least one scheduled evaluation and one dev item, got {evaluations} and {dev_size}"
        )
    patience = math.ceil(evaluations / 4) + (1 if dev_size < SMALL_DEV else 0)
    patience = min(MAX_PATIENCE, max(MIN_PATIENCE, patience))
    return patience, (
        f"stop after {patience} evaluations without a dev gain ({evaluations} scheduled, "
        f"{dev_size} dev items{'; small dev set: +1' if dev_size < SMALL_DEV else ''})"
    )


def early_stopping_callback(patience: int):
    from transformers import EarlyStoppingCallback

    return EarlyStoppingCallback(early_stopping_patience=patience)
