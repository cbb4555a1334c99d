from __future__ import annotations

import numpy as np
import pytest

from training.finetune.advisor import advise


def _log(losses, dev=None, steps_per_epoch=10):
    records = [
        {"step": i + 1, "epoch": (i + 1) / steps_per_epoch, "loss": float(v)} for i, v in enumerate(losses)
    ]
    for epoch, value in enumerate(dev or [], start=1):
        records.append(
            {"step": epoch * steps_per_epoch, "epoch": float(epoch), "eval_dev_ndcg@10_mean": value}
        )
    return records


def _kinds(records):
    return [tip.kind for tip in advise(records)]


def test_healthy_run_gets_no_advice():
    steps = np.arange(100)
    losses = 3.0 * np.exp(-steps / 60) + 0.5 + np.random.default_rng(0).normal(0, 0.02, 100)
    assert _kinds(_log(losses, dev=[0.60, 0.65, 0.68, 0.70])) == []


def test_noisy_but_converging_mnrl_loss_is_not_oscillation():
    """Like a real run: the logged loss falls from ~3.5 to ~0.5 with swings of 30% of its final level."""
    steps = np.arange(120)
    losses = 3.0 * np.exp(-steps / 25) + 0.5 + np.random.default_rng(2).normal(0, 0.17, 120)
    assert "oscillation" not in _kinds(_log(losses))


def test_early_plateau_suggests_a_higher_learning_rate():
    steps = np.arange(100)
    losses = 2.0 * np.exp(-steps / 6) + 1.0 + np.random.default_rng(1).normal(0, 0.01, 100)
    tips = advise(_log(losses))
    assert [t.kind for t in tips] == ["plateau"]
    assert "higher learning_rate" in tips[0].message and tips[0].evidence["early_share"] > 0.85


def test_oscillation_suggests_lower_rate_or_longer_warmup():
    steps = np.arange(100)
    losses = 3.0 * np.exp(-steps / 60) + 0.5 + 0.8 * np.sign(np.sin(steps * 1.7))
    tips = advise(_log(losses))
    assert "oscillation" in [t.kind for t in tips]
    assert "warmup_ratio to 0.15-0.2" in next(t for t in tips if t.kind == "oscillation").message


def test_overfitting_when_dev_falls_while_loss_falls():
    steps = np.arange(100)
    losses = 3.0 * np.exp(-steps / 30) + 0.2
    tips = advise(_log(losses, dev=[0.60, 0.70, 0.69, 0.66, 0.64, 0.62, 0.61, 0.60, 0.59, 0.58]))
    overfit = [t for t in tips if t.kind == "overfitting"]
    assert overfit and overfit[0].evidence["peak_epoch"] == 2.0 and "epochs: 2" in overfit[0].message


@pytest.mark.parametrize(
    ("choice", "said"),
    [
        (None, "the best checkpoint was kept"),
        ("best dev checkpoint (step 20) kept: +0.03 beyond noise", "the best checkpoint was kept"),
        ("last checkpoint (step 100) kept: the best led within noise", "the last checkpoint was kept"),
    ],
)
def test_the_overfitting_tip_names_the_checkpoint_that_was_kept(choice, said):
    losses = 3.0 * np.exp(-np.arange(100) / 30) + 0.2
    tips = advise(_log(losses, dev=[0.60, 0.70, 0.69, 0.66, 0.64, 0.62]), checkpoint_choice=choice)
    message = next(t for t in tips if t.kind == "overfitting").message
    assert said in message and ("best" in said) == ("best checkpoint" in message)


def test_dev_dip_with_rising_loss_is_not_called_overfitting():
    losses = np.linspace(1.0, 2.0, 100)  # loss rising: a different problem, not overfitting
    assert "overfitting" not in _kinds(_log(losses, dev=[0.6, 0.7, 0.6, 0.5]))


def test_early_saturation_suggests_fewer_epochs():
    """Like the medical run: dev at its best after epoch 1 of 9, the rest within noise, loss still falling."""
    steps = np.arange(90)
    losses = 1.0 * np.exp(-steps / 20) + 0.05 + np.random.default_rng(3).normal(0, 0.01, 90)
    dev = [0.978, 0.975, 0.977, 0.976, 0.974, 0.977, 0.975, 0.976, 0.975]
    tips = advise(_log(losses, dev=dev))
    assert [t.kind for t in tips] == ["saturation"]
    assert "epoch 1 of 9" in tips[0].message and "epochs: 1 would likely score as well" in tips[0].message


def test_late_peak_or_a_real_fall_is_not_saturation():
    steps = np.arange(100)
    losses = 3.0 * np.exp(-steps / 60) + 0.5 + np.random.default_rng(0).normal(0, 0.02, 100)
    late_peak = [0.80, 0.84, 0.85, 0.87, 0.868, 0.863, 0.891, 0.886, 0.884, 0.882]  # SciFact: epoch 7 of 10
    assert "saturation" not in _kinds(_log(losses, dev=late_peak))
    early_fall = [0.90, 0.85, 0.84, 0.83]  # a fall beyond noise is overfitting, said once
    assert _kinds(_log(losses, dev=early_fall)) == ["overfitting"]


def test_short_logs_are_left_alone():
    assert advise(_log([3.0, 2.0, 1.0])) == []
