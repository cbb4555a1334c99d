from __future__ import annotations

import numpy as np
import pytest

from training.matryoshka.adaptor import learn_adaptor
from training.matryoshka.rotation import fit_rotation


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _texts(seed: int = 0, n: int = 300) -> np.ndarray:
    """Unit vectors in 8 dims sharing one large common direction, as sentence embeddings do (anisotropy): the PCA
    rotation puts that nearly constant direction first, so a 2-dim prefix makes most texts look alike. A
    rotation can only reorder axes; the adaptor may also shrink that one."""
    rng = np.random.default_rng(seed)
    spread = np.array([0.2, 1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    return _unit(np.array([2.0, 0, 0, 0, 0, 0, 0, 0]) + rng.normal(size=(n, 8)) * spread).astype(np.float32)


def _prefix_error(matrix: np.ndarray, x: np.ndarray, dim: int) -> float:
    """Mean |cos of the mapped prefixes - cos of the originals| over all pairs."""
    y = _unit((x @ matrix.T)[:, :dim])
    return float(np.abs(y @ y.T - x @ x.T).mean())


def test_the_adaptor_brings_the_prefix_similarities_closer_to_the_full_ones_and_keeps_the_full_dim():
    x = _texts()
    pca = fit_rotation(x)
    learned = learn_adaptor(pca, x, [8, 2], steps=200, learning_rate=1e-2)
    assert learned.matrix.shape == (8, 8) and learned.steps == 200
    assert _prefix_error(learned.matrix, x, 2) < 0.9 * _prefix_error(pca, x, 2)
    assert _prefix_error(learned.matrix, x, 8) < 0.02  # the full dim stays (nearly) similarity-preserving
    assert [h["step"] for h in learned.history] == [1, 50, 100, 150, 200]


def test_the_ranking_term_uses_the_training_pairs():
    x = _texts(seed=1, n=120)
    pca = fit_rotation(x)
    anchors = _unit(x[:40] + np.random.default_rng(2).normal(scale=0.05, size=(40, 8))).astype(np.float32)
    learned = learn_adaptor(pca, x, [8, 2], anchors, np.arange(40), x, rank_weight=1.0, steps=50)
    assert all(h["rank"] is not None for h in learned.history)
    unsupervised = learn_adaptor(pca, x, [8, 2], steps=50)
    assert all(h["rank"] is None for h in unsupervised.history)
    assert not np.allclose(learned.matrix, unsupervised.matrix)


def test_bad_inputs_say_what_was_expected():
    x = _texts(n=20)
    with pytest.raises(ValueError, match=r"init must be \[8, 8\], got \[4, 8\]"):
        learn_adaptor(np.eye(4, 8, dtype=np.float32), x, [2])
    with pytest.raises(ValueError, match=r"dims \[16\] are outside 1\.\.8"):
        learn_adaptor(np.eye(8, dtype=np.float32), x, [16, 2])
    with pytest.raises(ValueError, match="need at least 2 texts to learn an adaptor, got 1"):
        learn_adaptor(np.eye(8, dtype=np.float32), x[:1], [2])
    with pytest.raises(ValueError, match="rank_weight > 0 needs anchors, positives and corpus"):
        learn_adaptor(np.eye(8, dtype=np.float32), x, [2], rank_weight=0.5)
