"""Early stopping by default: the patience comes from the run, a run whose dev metric stops improving ends before
its scheduled epochs with the best checkpoint as the model, and turning it off trains every epoch."""

from __future__ import annotations

import numpy as np
import pytest

from training.config import load_config
from training.finetune.early_stopping import patience_from_data
from training.finetune.train import train


@pytest.mark.parametrize(
    ("evaluations", "dev_size", "expected"), [(2, 100, 2), (10, 100, 3), (10, 20, 4), (40, 100, 5), (1, 5, 2)]
)
def test_patience_grows_with_the_schedule_and_a_small_dev_set(evaluations, dev_size, expected):
    patience, why = patience_from_data(evaluations, dev_size)
    assert patience == expected and f"{evaluations} scheduled" in why


def test_patience_needs_a_schedule():
    with pytest.raises(
        ValueError, match="need at least one scheduled evaluation and one dev item, got 0 and 10"
    ):
        patience_from_data(0, 10)


def _config(tmp_path, model_dir, data, **extra):
    # A learning rate this high on the tiny model: dev NDCG saturates within a few epochs, then stays flat.
    return load_config(
        None,
        {
            "base_model": str(model_dir),
            "data.path": str(data),
            "output_dir": str(tmp_path / "runs"),
            "batch_size": 16,
            "learning_rate": 3e-3,
            "epochs": 8,
            "dev_fraction": 0.2,
            "seed": 3,
            "rotation": "off",
            "mining.strategy": "none",
            **extra,
        },
    )


def _weights(path):
    from safetensors.numpy import load_file

    return load_file(str(path / "model.safetensors"))


def test_a_run_stops_near_its_dev_peak_and_keeps_the_best_checkpoint(tmp_path, tiny_model_dir, tiny_ir_dir):
    result = train(_config(tmp_path, tiny_model_dir, tiny_ir_dir), progress=False)
    stopping = result.early_stopping
    assert stopping["stopped"] and stopping["epochs_run"] < 8, stopping
    assert (
        stopping["patience"] == 3 and "small dev set" in stopping["reason"]
    )  # 8 evaluations -> 2, +1 small dev
    assert "without a dev gain beyond noise" in stopping["reason"]
    assert stopping["gains"] and stopping["last_gain_beyond_noise_at_step"] < stopping["gains"][-1]["step"]
    # The model is the dev-best checkpoint, or the last one when the best led only within noise: it says which.
    choice = result.checkpoint_choice
    step = choice.split("(step ")[1].split(")")[0]
    assert choice.startswith(("best dev checkpoint", "last checkpoint")), choice
    saved, kept = (
        _weights(result.run_dir / "model"),
        _weights(result.run_dir / "train" / "checkpoints" / f"checkpoint-{step}"),
    )
    assert saved.keys() == kept.keys() and all((saved[k] == kept[k]).all() for k in saved)


def test_turned_off_it_trains_every_epoch(tmp_path, tiny_model_dir, tiny_ir_dir):
    result = train(
        _config(tmp_path, tiny_model_dir, tiny_ir_dir, epochs=4, early_stopping=False), progress=False
    )
    assert result.early_stopping is None and result.steps == 4 * -(-result.train_rows // 16)


class _State:
    def __init__(self, step):
        self.global_step = step


def _evaluate(callback, history, step, scores):
    from transformers import TrainerControl

    history[step] = scores
    return callback.on_evaluate(None, _State(step), TrainerControl()).should_training_stop


def test_only_a_dev_gain_beyond_noise_resets_the_patience():
    """SciFact's curve in small: a big gain counts; then new highs that are within the noise of the dev queries do
    not restart the wait (transformers' callback counted every one), so the run stops `patience` evaluations
    after the last gain that counted."""
    from training.finetune.early_stopping import BeyondNoiseStopping, early_stopping_callback

    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.7, 80)
    history: dict = {}
    callback = early_stopping_callback(3, type("Evaluator", (), {"per_query_history": history})())
    assert isinstance(callback, BeyondNoiseStopping)
    assert not _evaluate(callback, history, 10, base)  # the first evaluation sets the bar
    assert not _evaluate(callback, history, 20, base + 0.1)  # beyond noise: the bar moves
    stops = [
        _evaluate(callback, history, step, base + 0.1 + rng.normal(0.002 * i, 0.1, 80))
        for i, step in enumerate((30, 40, 50), start=1)
    ]
    assert stops == [False, False, True]
    summary = callback.summary()
    assert summary["last_gain_beyond_noise_at_step"] == 20
    assert [g["step"] for g in summary["gains"]] == [20, 30, 40, 50]
    assert all(g["over_step"] == 20 and g["low"] <= 0 and not g["counted"] for g in summary["gains"][1:])
    assert summary["gains"][0]["counted"]


def test_a_slow_climb_that_adds_up_beyond_noise_counts():
    """Each step's gain alone is small, but it is measured against the last evaluation that counted, so gains that
    add up beyond noise move the bar."""
    from training.finetune.early_stopping import BeyondNoiseStopping

    base = np.random.default_rng(1).uniform(0.3, 0.7, 80)
    history: dict = {}
    callback = BeyondNoiseStopping(2, history)
    _evaluate(callback, history, 1, base)
    spread = np.random.default_rng(2).normal(0, 0.01, 80)
    _evaluate(callback, history, 2, base + 0.001 + spread)  # within noise: waited 1
    assert not _evaluate(callback, history, 3, base + 0.03 + spread)  # +0.03 over step 1: beyond noise
    assert callback.summary()["last_gain_beyond_noise_at_step"] == 3


def test_an_sts_dev_set_keeps_transformers_callback():
    from transformers import EarlyStoppingCallback

    from training.finetune.early_stopping import early_stopping_callback

    assert isinstance(early_stopping_callback(2, object()), EarlyStoppingCallback)
    patience, why = patience_from_data(10, 100, beyond_noise=False)
    assert "without a dev gain (10 scheduled" in why
