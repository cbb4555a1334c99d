"""Early stopping by default: the patience comes from the run, a run whose dev metric stops improving ends before
its scheduled epochs with the best checkpoint as the model, and turning it off trains every epoch."""

from __future__ import annotations

import pytest

from training.config import load_config
from training.early_stopping import patience_from_data
from training.finetune import train


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
