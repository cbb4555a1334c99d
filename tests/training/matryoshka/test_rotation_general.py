"""The rotation and other domains (issue 30): general texts join the PCA's sample, so that the first dims do not
hold the training domain's directions alone."""

from __future__ import annotations

import numpy as np
import pytest

import training.matryoshka.rotation as rotation
from tests.training.matryoshka.test_rotation import _decide_on_dev_scores, _dev_base
from training.data.general_texts import load_general_texts, split_general
from training.matryoshka.rotation import RotationData

DIM = 32
IDENTITY = np.eye(DIM, dtype=np.float32)
REVERSED = IDENTITY[::-1].copy()


def _decide(monkeypatch, matrix, general: int = 60, seen: dict | None = None):
    """decide_rotation (test_rotation's dev-score harness) where the PCA is `matrix` and the dev queries see a gain
    beyond noise at d8 only; `seen` collects what the PCA was fitted on."""
    base = _dev_base(np.random.default_rng(0))

    def by_dim(r):
        gain = 0.0 if np.array_equal(r, IDENTITY) else 0.2
        return {32: base[32], 16: base[16], 8: base[8] + gain}

    seen = {} if seen is None else seen

    def fit(emb):
        seen["rows"] = len(emb)
        return matrix

    monkeypatch.setattr(rotation, "fit_rotation", fit)
    texts = [f"domain text {i}" for i in range(40)]
    general_texts = [f"general text {i}" for i in range(general)]
    data = RotationData(texts, [], {}, texts[:20], general_texts=general_texts)
    return _decide_on_dev_scores(monkeypatch, by_dim, data=data)


def test_the_general_texts_join_the_fit_and_the_decision_records_them(monkeypatch):
    seen = {}
    matrix, decision = _decide(monkeypatch, REVERSED, seen=seen)
    assert decision.applied and matrix is not None and seen["rows"] == 40 + 30
    assert decision.general == {"fitted": 30, "weight": rotation.GENERAL_WEIGHT}
    assert decision.fit_texts == 40 + 30  # the domain texts and the fitted half of the general ones


def test_without_general_texts_the_domain_alone_decides(monkeypatch):
    seen = {}
    matrix, decision = _decide(monkeypatch, REVERSED, general=0, seen=seen)
    assert decision.applied and decision.general is None and decision.fit_texts == 40 and seen["rows"] == 40


def test_the_general_texts_weigh_in_the_pca():
    """500 domain rows along axes 0 and 2, 10 general rows along axis 1: alone the domain's two axes lead; with
    the general rows weighted to the domain's energy, axis 1 is among the first two."""
    rng = np.random.default_rng(0)
    domain = np.zeros((500, 4))
    domain[:, 0], domain[:, 2] = 1.0, 0.5 * rng.normal(size=500)
    general = np.zeros((10, 4))
    general[:, 1] = 1.0
    on_axis_1 = lambda r: float(np.linalg.norm(r[:2, 1]))  # noqa: E731  (axis 1's share of the first two rows)
    assert on_axis_1(rotation.fit_rotation(domain)) < 0.01
    assert on_axis_1(rotation.fit_rotation(rotation._with_general(domain, general))) > 0.99


def test_the_packaged_general_texts_split_by_position(tmp_path):
    texts = load_general_texts()
    fit, guard = split_general(texts)
    assert len(texts) > 300 and len(set(texts)) == len(texts)
    assert fit + guard == texts and abs(len(fit) - len(guard)) <= 1


def test_a_bad_general_table_says_what_it_expected(tmp_path):
    path = tmp_path / "sts.jsonl"
    path.write_text('{"sentence1": "a", "sentence2": "b", "score": 1}\n{"text": "c"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"sts.jsonl:2: expected a JSON object with sentence1 and sentence2"):
        load_general_texts(path)


def test_training_gives_the_rotation_the_packaged_general_texts():
    from types import SimpleNamespace

    from datasets import Dataset

    from training.finetune.train import _rotation_data

    prepared = SimpleNamespace(
        train=Dataset.from_dict({"anchor": ["q1", "q2"], "positive": ["d1", "d2"]}),
        corpus=["d1", "d2", "d3"],
        pair_like=True,
        labelled={"q1": {"d1"}, "q2": {"d2"}},
        dev={"kind": "retrieval", "queries": ["q2"]},
    )
    data = _rotation_data(prepared)
    assert list(data.general_texts) == load_general_texts() and data.pairs == [("q1", "d1"), ("q2", "d2")]
