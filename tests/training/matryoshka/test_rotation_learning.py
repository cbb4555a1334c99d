from __future__ import annotations

import numpy as np

from training.finetune.dev_eval import binary_ndcg_at_k
from training.matryoshka.rotation import fit_rotation
from training.matryoshka.rotation_learning import PATIENCE, learn_rotation


def _domain(seed: int = 0, n: int = 200):
    """What identifies a document lives in 4 low-variance dims; 4 high-variance dims are noise that a query does
    not share. PCA therefore puts the noise first, and a 4-dim prefix of the PCA rotation cannot retrieve."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n, 4))
    docs = np.hstack([rng.normal(scale=4.0, size=(n, 4)), signal])
    queries = np.hstack([rng.normal(scale=4.0, size=(n, 4)), signal + rng.normal(scale=0.1, size=(n, 4))])
    return docs.astype(np.float32), queries.astype(np.float32)


def _ndcg_at(rotation, queries, docs, dim, relevant):
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    return binary_ndcg_at_k(
        unit((queries @ rotation.T)[:, :dim]) @ unit((docs @ rotation.T)[:, :dim]).T, relevant
    )


def test_learned_rotation_moves_what_retrieval_needs_into_the_prefix_and_stays_orthogonal():
    docs, queries = _domain()
    train, dev = np.arange(150), np.arange(150, 200)
    pca = fit_rotation(np.vstack([docs, queries[train]]))
    dev_score = lambda r: _ndcg_at(r, queries[dev], docs, 4, [{int(i)} for i in dev])  # noqa: E731
    learned = learn_rotation(
        pca, queries[train], train, docs, [set() for _ in train], [8, 4], dev_score, learning_rate=0.05
    )  # a 90-degree turn of 4 axes: larger steps than a refinement
    assert learned.step > 0
    assert learned.dev > dev_score(pca) + 0.2  # held-out queries, not the pairs it was trained on
    assert learned.dev == dev_score(learned.rotation)
    r = learned.rotation
    assert np.allclose(r @ r.T, np.eye(8), atol=1e-4)
    full = lambda m: _ndcg_at(m, queries, docs, 8, [{i} for i in range(200)])  # noqa: E731
    assert abs(full(r) - full(pca)) < 1e-6  # a rotation cannot change full-dim rankings
    assert [h["step"] for h in learned.history][:3] == [0, 5, 10]


def test_learning_stops_early_and_keeps_the_start_when_dev_never_improves():
    docs, queries = _domain(seed=1, n=60)
    pca = fit_rotation(np.vstack([docs, queries]))
    learned = learn_rotation(
        pca, queries, np.arange(60), docs, [set() for _ in range(60)], [8, 4], dev_score=lambda r: 0.5
    )
    assert learned.step == 0 and np.array_equal(learned.rotation, pca)
    assert len(learned.history) == 1 + PATIENCE  # the start, then PATIENCE evaluations without a gain


def test_other_labelled_positives_are_not_negatives():
    """An anchor with two positives: with the second masked, its loss cannot push that text away."""
    import torch

    from training.matryoshka.rotation_learning import _mask, _ranking_loss

    mask = _mask(np.array([0]), [{1}], 3)
    assert mask.tolist() == [[False, True, False]]
    q = torch.tensor([[1.0, 0.0]])
    docs = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    masked = _ranking_loss(q, docs, torch.tensor([0]), mask)
    unmasked = _ranking_loss(q, docs, torch.tensor([0]), torch.zeros_like(mask))
    assert float(masked) < 1e-6 < float(unmasked) - 0.5
