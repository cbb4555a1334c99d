"""The dev evaluation's encodings are reused after training: the rotation's decision and the final dev metrics take
the kept step's query and corpus embeddings instead of encoding the whole corpus twice more, and give the same
numbers as encoding again."""

from __future__ import annotations

import numpy as np
import pytest

from training.finetune.dev_eval import MatryoshkaRetrievalEvaluator
from training.matryoshka.rotation import add_rotation, decide_rotation, fit_rotation, model_encoder


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_model_dir), device="cpu")


def _evaluator():
    queries = [f"heart pain doctor visit {i}" for i in range(12)]
    corpus = [f"{q} again" for q in queries] + [f"unrelated filler text {i}" for i in range(20)]
    return MatryoshkaRetrievalEvaluator(queries, corpus, [{i} for i in range(12)], [32, 8])


def test_the_kept_encodings_give_the_same_metrics_with_and_without_a_transform(tiny_model):
    evaluator = _evaluator()
    fresh = evaluator(tiny_model, steps=10)
    known = evaluator.encodings_of(tiny_model)
    assert len(known) == len(evaluator.queries) + len(evaluator.corpus)
    assert evaluator.metrics_from(known) == pytest.approx(fresh, abs=1e-6)
    matrix = fit_rotation(tiny_model.encode(evaluator.corpus))
    rotated = add_rotation(tiny_model, matrix)
    assert evaluator.metrics_from(known, matrix) == pytest.approx(_evaluator()(rotated), abs=1e-4)


def test_another_model_gets_nothing(tiny_model, tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    evaluator = _evaluator()
    assert evaluator.encodings_of(tiny_model) == {}  # nothing evaluated yet
    evaluator(tiny_model, steps=1)
    other = SentenceTransformer(str(tiny_model_dir), device="cpu")
    with __import__("torch").no_grad():
        for p in other.parameters():
            p.add_(0.05 * __import__("torch").randn_like(p))
    assert evaluator.encodings_of(other) == {}
    assert evaluator.encodings_of(tiny_model)  # still the kept step's model


def test_only_the_best_and_the_latest_step_are_kept(tiny_model, monkeypatch):
    evaluator = _evaluator()
    scores = iter([0.5, 0.7, 0.6, 0.65])  # each step's mean NDCG@10 over its dev queries
    monkeypatch.setattr(evaluator, "per_query", lambda q, d: np.full(len(q), next(scores)))
    for step in (1, 2, 3, 4):
        evaluator(tiny_model, steps=step)
    assert sorted(evaluator._encodings) == [2, 4]  # best (0.7) and latest


def test_the_rotation_decision_encodes_only_what_the_dev_evaluation_did_not(tiny_model):
    """With the kept encodings, only the training anchors are encoded for the decision; the result is the same."""
    from training.matryoshka.rotation import RotationData

    evaluator = _evaluator()
    evaluator(tiny_model, steps=5)
    known = evaluator.encodings_of(tiny_model)
    anchors = [f"lease tenant rent deposit {i}" for i in range(30)]
    pairs = [(a, c) for a, c in zip(anchors, evaluator.corpus[12:], strict=False)]
    labelled = {q: {evaluator.corpus[i]} for q, i in zip(evaluator.queries, range(12), strict=True)}
    data = RotationData(evaluator.corpus, pairs, labelled, evaluator.queries)
    encoded: list[str] = []
    plain = model_encoder(tiny_model)
    counting = model_encoder(tiny_model, known=known)

    def spy(texts, role):
        encoded.extend(t for t in texts if (role, t) not in known)
        return counting(texts, role)

    reused, decision = decide_rotation(spy, 32, data, [32, 8], seed=1)
    again, decision_again = decide_rotation(plain, 32, data, [32, 8], seed=1)
    assert set(encoded) == {a for a, _ in pairs}  # the corpus and the dev queries came from the evaluation
    assert decision.applied == decision_again.applied
    assert decision.dev_after == pytest.approx(decision_again.dev_after, abs=1e-3)
