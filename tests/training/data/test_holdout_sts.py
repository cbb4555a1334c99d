"""Scored pairs held out of STS training data: no sentence on both sides (either column, compared as the leakage
check compares texts), deterministic, recorded in split.json, and clear refusals."""

from __future__ import annotations

import json
import random

import pytest

from tests import synthetic
from training.data.holdout_sts import hold_out_scored_pairs
from training.data.loading import load_dataset
from training.errors import ConfigError


def _norm(text: str) -> str:
    return " ".join(text.lower().split()).strip(".?! ")


def scored_pairs(n: int, seed: int = 0) -> list[tuple[str, str, float]]:
    """Pairs whose sentences recur: every third pair reuses the previous pair's second sentence as its first
    (chains a row-wise split would cut), and every fifth repeats a sentence in other case and punctuation."""
    rng = random.Random(seed)
    rows: list[tuple[str, str, float]] = []
    for i in range(n):
        first = f"sentence {i} about " + " ".join(rng.sample(synthetic.FILLER, 3))
        second = f"other {i} on " + " ".join(rng.sample(synthetic.FILLER, 3))
        if i % 3 == 2:
            first = rows[-1][1]
        if i % 5 == 4:
            first = rows[-1][0].upper() + "?"
        rows.append((first, second, round(rng.uniform(0, 5), 1)))
    return rows


def _split(tmp_path, rows, name="split", **kwargs):
    path = synthetic.write_csv(tmp_path / f"{name}.csv", ["sentence1", "sentence2", "score"], rows)
    return hold_out_scored_pairs(load_dataset(path), tmp_path / name, **kwargs)


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_no_sentence_is_on_both_sides(tmp_path):
    rows = scored_pairs(300)
    split = _split(tmp_path, rows, fraction=0.2, seed=7)
    train, held = _read(split.train_path), _read(split.eval_path)
    assert len(train) + len(held) == len(rows) == split.train_pairs + split.eval_pairs
    assert 50 <= len(held) <= 70  # about 20% of the pairs
    assert set(held[0]) == {"sentence1", "sentence2", "score"}
    train_sentences = {_norm(r[c]) for r in train for c in ("sentence1", "sentence2")}
    held_sentences = {_norm(r[c]) for r in held for c in ("sentence1", "sentence2")}
    assert not train_sentences & held_sentences
    recorded = json.loads((tmp_path / "split" / "split.json").read_text())
    assert recorded["shared_sentences"] == 0 and recorded["eval_pairs"] == len(held)
    assert recorded["method"].startswith("by sentence")
    # The data did share sentences between pairs (a split by row would have put some on both sides).
    assert len({_norm(t) for r in rows for t in r[:2]}) <= 2 * len(rows) - 100


def test_same_data_and_seed_same_split_other_seed_other_split(tmp_path):
    rows = scored_pairs(200)
    first = _split(tmp_path, rows, "a", seed=3)
    again = _split(tmp_path, rows, "b", seed=3)
    other = _split(tmp_path, rows, "c", seed=4)
    assert first.eval_sentences_sha256 == again.eval_sentences_sha256
    assert first.eval_path.read_text() == again.eval_path.read_text()
    assert other.eval_sentences_sha256 != first.eval_sentences_sha256
    assert "gating on Spearman over" in first.describe() and "no sentence on both sides" in first.describe()


def test_too_few_pairs_is_refused_with_the_counts(tmp_path):
    with pytest.raises(ConfigError, match=r"gives \d+ eval and \d+ training pairs \(at least 30 and 30"):
        _split(tmp_path, scored_pairs(60), fraction=0.2)


def test_pairs_data_is_refused_naming_the_type(tmp_path):
    path = synthetic.write_csv(tmp_path / "pairs.csv", ["anchor", "positive"], synthetic.make_pairs(100))
    with pytest.raises(ConfigError, match=r"STS table \(sentence1, sentence2, score\), not 'pairs' data"):
        hold_out_scored_pairs(load_dataset(path), tmp_path / "out")


def test_existing_folder_and_bad_fraction_are_refused(tmp_path):
    (tmp_path / "split").mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        _split(tmp_path, scored_pairs(200))
    with pytest.raises(ConfigError, match=r"expected a fraction in \(0, 1\), got 1.5"):
        _split(tmp_path, scored_pairs(200), name="other", fraction=1.5)
