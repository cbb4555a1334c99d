"""training.finetune.dev_noise: a dev gain counts only beyond the dev set's noise (paired bootstrap over dev queries)."""

from __future__ import annotations

import numpy as np
import pytest

from training.finetune.dev_noise import paired_gain


def test_a_consistent_gain_is_beyond_noise():
    rng = np.random.default_rng(0)
    before = rng.uniform(0.2, 0.8, 40)
    gain = paired_gain(before + 0.03 + rng.normal(0, 0.01, 40), before)
    assert gain.beyond_noise and 0 < gain.low < gain.mean < gain.high and gain.n == 40
    assert "beyond the dev set's noise" in gain.describe()


def test_a_small_gain_on_few_noisy_queries_is_not():
    # +0.02 on average over 30 queries, but each query moves by +-0.2: what a 30-query dev set looks like.
    rng = np.random.default_rng(1)
    before = rng.uniform(0.2, 0.8, 30)
    moves = rng.normal(0, 0.2, 30)
    after = before + moves - moves.mean() + 0.02
    gain = paired_gain(after, before)
    assert gain.mean == pytest.approx(0.02) and not gain.beyond_noise and gain.low < 0
    assert "within the dev set's noise" in gain.describe()


def test_no_change_is_not_a_gain_and_a_uniform_one_is():
    before = np.linspace(0, 1, 10)
    assert not paired_gain(before, before).beyond_noise
    assert paired_gain(before + 0.01, before).low == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("after", "before"), [([0.1, 0.2], [0.1]), ([0.5], [0.5]), ([[0.1, 0.2]], [[0.1, 0.2]])]
)
def test_mismatched_or_too_few_scores_are_an_error(after, before):
    with pytest.raises(ValueError, match="need two equally long per-query score lists"):
        paired_gain(after, before)
