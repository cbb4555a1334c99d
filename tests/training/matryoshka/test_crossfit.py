"""training.matryoshka.crossfit: folds by anchor, each held-out query scored once, never by a fit that saw it."""

from __future__ import annotations

import numpy as np

from training.matryoshka.crossfit import FOLDS, MIN_QUERIES, cross_fit


def _set(queries: int, seed: int = 0):
    """Queries with one or two positives each (a query's pairs must stay in one fold), unit vectors."""
    rng = np.random.default_rng(seed)
    corpus = [f"doc {i}" for i in range(2 * queries + 10)]
    pairs = [(f"query {q}", f"doc {2 * q}") for q in range(queries)]
    pairs += [(f"query {q}", f"doc {2 * q + 1}") for q in range(0, queries, 3)]

    def unit(n: int) -> np.ndarray:
        vectors = rng.normal(size=(n, 16)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    return pairs, unit(len(pairs)), corpus, unit(len(corpus))


def test_every_query_is_held_out_once_and_never_in_its_folds_fit():
    pairs, anchor_emb, corpus, corpus_emb = _set(60)
    folds = cross_fit(pairs, anchor_emb, corpus, corpus_emb, {}, [16, 4], seed=3)
    assert folds is not None and len(folds.folds) == FOLDS and folds.queries == 60
    held_sizes = []
    for fold in folds.folds:
        fitted = {pairs[i][0] for i in fold.fit}
        held = {a for a, _ in pairs} - fitted
        assert held and not held & fitted  # a query's pairs are all in the fit or all held out
        held_sizes.append(len(fold.per_query(np.eye(16, dtype=np.float32))))
        assert len(held) == held_sizes[-1]
    assert sum(held_sizes) == 60


def test_pooled_scores_are_the_held_out_scores_of_each_folds_own_transform():
    pairs, anchor_emb, corpus, corpus_emb = _set(60)
    folds = cross_fit(pairs, anchor_emb, corpus, corpus_emb, {}, [16, 4])
    identity, seen = np.eye(16, dtype=np.float32), []

    def candidate(i, fold):
        seen.append(i)
        return identity

    cand_q, ref_q, cand_d, ref_d = folds.pooled(candidate, lambda i, fold: identity)
    assert seen == list(range(FOLDS)) and cand_q.shape == ref_q.shape == (60,)
    assert np.array_equal(cand_q, ref_q) and sorted(cand_d) == [4, 16]
    assert np.allclose(cand_q, (cand_d[16] + cand_d[4]) / 2)
    # each query's own positives (its pairs) are relevant: at the full dim, random vectors rarely rank them first
    assert 0 < cand_d[16].mean() < 1


def test_too_few_training_queries_to_cross_fit():
    pairs, anchor_emb, corpus, corpus_emb = _set(MIN_QUERIES - 1)
    assert cross_fit(pairs, anchor_emb, corpus, corpus_emb, {}, [16, 4]) is None
