"""The dev split is sized from the data (a floor in queries on small sets) and ranks against the whole corpus."""

from __future__ import annotations

import pytest

from tests.synthetic import write_lay_jargon_beir
from training.data.loading import load_dataset
from training.finetune.prepare import dev_size, prepare_training_data


@pytest.mark.parametrize(
    ("n", "fraction", "expected"),
    [
        (300, 0.1, 50),  # 10% would be 30: raised to the 50-query floor (17%)
        (100, 0.1, 25),  # the floor never takes more than a quarter
        (800, 0.1, 80),  # large enough: the fraction as given
        (5000, 0.1, 200),  # capped: evaluations during training stay cheap
        (300, 0.3, 90),
        (300, 0.0, 0),  # 0 turns the dev set off
    ],
)
def test_dev_size_from_the_data(n, fraction, expected):
    assert dev_size(n, fraction) == expected


def test_the_dev_set_ranks_against_the_whole_corpus(tmp_path):
    data = load_dataset(write_lay_jargon_beir(tmp_path / "ir", train_queries=160), "ir")
    prepared = prepare_training_data(data, "train", dev_fraction=0.1, seed=0)
    dev = prepared.dev
    assert dev["size"] == len(dev["queries"]) == 40  # 16 by the fraction, raised to a quarter of 160
    assert set(dev["corpus"]) == set(prepared.corpus)
    train_anchors = set(prepared.train["anchor"])
    assert not train_anchors & set(dev["queries"]) and len(train_anchors) == 120
    assert all(rel for rel in dev["relevant"])
