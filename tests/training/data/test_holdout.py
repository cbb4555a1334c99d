"""The held-out split built from a training table when there is no BEIR folder: leak-free by anchor on both
sides, deterministic, corpus = every positive and negative, and clear refusals."""

from __future__ import annotations

import json

import pytest

from tests import synthetic
from training.data.holdout import hold_out_by_anchor
from training.data.loading import load_dataset
from training.errors import ConfigError


def _split(tmp_path, rows, header=("anchor", "positive"), name="split", **kwargs):
    path = synthetic.write_csv(tmp_path / f"{name}.csv", list(header), rows)
    return hold_out_by_anchor(load_dataset(path), tmp_path / name, **kwargs)


def _sides(split):
    train = [json.loads(line) for line in split.train_path.read_text().splitlines()]
    queries = {
        json.loads(line)["_id"]: json.loads(line)["text"]
        for line in (split.eval_dir / "queries.jsonl").read_text().splitlines()
    }
    docs = {
        json.loads(line)["_id"]: json.loads(line)["text"]
        for line in (split.eval_dir / "corpus.jsonl").read_text().splitlines()
    }
    qrels = [
        line.split("\t") for line in (split.eval_dir / "qrels" / "test.tsv").read_text().splitlines()[1:]
    ]
    return train, queries, docs, qrels


def test_no_anchor_and_no_positive_is_on_both_sides(tmp_path):
    rows = synthetic.make_pairs(120)
    # FAQ-style rows (several anchors, one answer) and question pairs (a text is anchor here, positive there).
    rows += [
        ("faq question one", "the shared answer"),
        ("faq question two", "the shared answer"),
        ("lease tenant 7", "lease deposit rent 8"),
        ("lease deposit rent 8", "landlord notice 9"),
    ]
    split = _split(tmp_path, rows, fraction=0.25, seed=3)
    train, queries, docs, qrels = _sides(split)
    train_texts = {r["anchor"] for r in train} | {r["positive"] for r in train}
    eval_positives = {docs[d] for _, d, _ in qrels}
    assert not train_texts & set(queries.values())
    assert not train_texts & eval_positives
    assert {"faq question one", "faq question two"} <= train_texts or {
        "faq question one",
        "faq question two",
    } <= set(queries.values())
    assert split.eval_anchors == len(queries) and 0.2 <= split.eval_anchors / 124 <= 0.3
    assert set(docs.values()) == {p for _, p in rows}  # the corpus is every positive (no negatives here)


def test_the_split_is_deterministic_and_recorded(tmp_path):
    rows = synthetic.make_pairs(100)
    a, b = _split(tmp_path, rows, name="a", seed=1), _split(tmp_path, rows, name="b", seed=1)
    c = _split(tmp_path, rows, name="c", seed=2)
    assert a.eval_anchors_sha256 == b.eval_anchors_sha256 != c.eval_anchors_sha256
    recorded = json.loads((tmp_path / "a" / "split.json").read_text())
    assert recorded["seed"] == 1 and recorded["eval_anchors_sha256"] == a.eval_anchors_sha256
    assert "no BEIR folder given: gating on" in a.describe()


def test_negatives_join_the_corpus(tmp_path):
    rows = [(a, p, f"unrelated negative {i}") for i, (a, p) in enumerate(synthetic.make_pairs(60))]
    split = _split(tmp_path, rows, header=("anchor", "positive", "negative"))
    _, _, docs, _ = _sides(split)
    assert {f"unrelated negative {i}" for i in range(60)} <= set(docs.values())
    assert split.corpus_docs == 120 and split.dataset_type == "triplets"


def test_refusals_say_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match=r"at least 10 each needed"):
        _split(tmp_path, synthetic.make_pairs(20), name="small", fraction=0.2)
    with pytest.raises(ConfigError, match=r"not 'sts' data; set evaluation.data to a BEIR folder"):
        _split(tmp_path, [("a b", "c d", 3.0)] * 30, header=("sentence1", "sentence2", "score"), name="sts")
    _split(tmp_path, synthetic.make_pairs(60), name="twice")
    with pytest.raises(ConfigError, match=r"already exists"):
        _split(tmp_path, synthetic.make_pairs(60), name="twice")


def test_the_pipeline_holds_out_only_when_no_eval_set_was_given(tmp_path, tiny_ir_dir):
    from gates.pipeline.config import load_pipeline_config

    pairs = synthetic.write_csv(tmp_path / "p.csv", ["anchor", "positive"], synthetic.make_pairs(30))
    assert load_pipeline_config(None, {"data.path": str(pairs)}).needs_holdout()
    assert not load_pipeline_config(
        None, {"data.path": str(pairs), "evaluation.data": str(tiny_ir_dir)}
    ).needs_holdout()
    assert not load_pipeline_config(
        None, {"data.path": str(pairs), "data.eval_path": str(tiny_ir_dir)}
    ).needs_holdout()
    assert not load_pipeline_config(
        None, {"data.path": str(tiny_ir_dir)}
    ).needs_holdout()  # BEIR: its own split
