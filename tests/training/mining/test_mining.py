from __future__ import annotations

import numpy as np
import pytest

from tests.synthetic import make_pairs
from training.config import MiningConfig
from training.errors import ConfigError
from training.mining import mine
from training.mining.contradiction import nli_triplets
from training.mining.retrievers import dense_rankings


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_model_dir), device="cpu")


@pytest.fixture()
def rows():
    pairs = make_pairs(60)
    anchors = [a for a, _ in pairs]
    positives = [p for _, p in pairs]
    # A second labelled positive for the first anchors: it must never come back as their negative.
    labelled = {a: {p} for a, p in pairs}
    for a, _ in pairs[:10]:
        labelled[a].add(positives[-1])
    corpus = positives + [f"unrelated filler text number {i} about weather" for i in range(30)]
    return anchors, positives, corpus, labelled


def _assert_invariants(mined, labelled, n_neg):
    assert mined.num_negatives == n_neg
    for a, p, negs in zip(mined.anchors, mined.positives, mined.negatives, strict=True):
        assert len(negs) == n_neg
        assert p not in negs, "a negative equals its positive"
        assert not set(negs) & labelled[a], "a labelled positive of the anchor was mined as a negative"


@pytest.mark.parametrize("strategy", ["random", "bm25", "model", "partial_match", "curriculum"])
def test_mining_invariants(strategy, rows, tiny_model):
    anchors, positives, corpus, labelled = rows
    cfg = MiningConfig(strategy=strategy, num_negatives=3, range_max=40, relative_margin=0.05)
    mined = mine(anchors, positives, corpus, cfg, model=tiny_model, labelled=labelled, seed=0)
    assert len(mined) == len(anchors)
    _assert_invariants(mined, labelled, 3)
    hf = mined.to_hf_dataset()
    assert hf.column_names == ["anchor", "positive", "negative_1", "negative_2", "negative_3"]


def test_relative_margin_is_respected(rows, tiny_model):
    """Every mined (non-filler) negative scores below (1 - margin) x the positive's score."""
    anchors, positives, corpus, labelled = rows
    margin = 0.2
    cfg = MiningConfig(strategy="model", num_negatives=2, range_max=60, relative_margin=margin)
    mined = mine(anchors, positives, corpus, cfg, model=tiny_model, labelled=labelled, seed=0)
    enc = lambda texts: tiny_model.encode(texts, normalize_embeddings=True)  # noqa: E731
    a, p = enc(mined.anchors), enc(mined.positives)
    checked = 0
    for i, negs in enumerate(mined.negatives):
        pos_score = float(a[i] @ p[i])
        for n in enc(negs):
            score = float(a[i] @ n)
            # random top-up negatives (stats.filled_random) are exempt; everything else passed the filter
            if score > pos_score - abs(pos_score) * margin:
                checked -= 1
            checked += 1
    violations = len(mined.anchors) * 2 - checked
    assert violations <= mined.stats["filled_random"]
    assert mined.stats["skipped_margin"] > 0  # the filter did bind on this data


def test_range_min_skips_the_top_candidates(rows, tiny_model):
    anchors, positives, corpus, labelled = rows
    top = mine(
        anchors,
        positives,
        corpus,
        MiningConfig(strategy="model", num_negatives=1, range_min=0, range_max=40, relative_margin=0.0),
        model=tiny_model,
        labelled=labelled,
    )
    skipped = mine(
        anchors,
        positives,
        corpus,
        MiningConfig(strategy="model", num_negatives=1, range_min=5, range_max=40, relative_margin=0.0),
        model=tiny_model,
        labelled=labelled,
    )
    assert top.negatives != skipped.negatives


def test_curriculum_orders_stages_easy_to_hard(rows, tiny_model):
    anchors, positives, corpus, labelled = rows
    mined = mine(
        anchors,
        positives,
        corpus,
        MiningConfig(strategy="curriculum", num_negatives=1),
        model=tiny_model,
        labelled=labelled,
    )
    assert [s[0] for s in mined.stages] == ["random", "bm25", "model"]
    assert mined.stages[0][1] == 0 and mined.stages[-1][2] == len(mined)
    assert len(mined.stages) > 1, "nothing to check: fewer than two curriculum stages"
    assert all(a[2] == b[1] for a, b in zip(mined.stages, mined.stages[1:], strict=False))


def test_domain_confusion_draws_from_the_other_domain(rows, tiny_model):
    anchors, positives, corpus, labelled = rows
    other = [f"recipe for bread number {i} with flour" for i in range(20)]
    mined = mine(
        anchors,
        positives,
        corpus,
        MiningConfig(
            strategy="domain_confusion", num_negatives=2, domain_confusion_path="x", relative_margin=0.0
        ),
        model=tiny_model,
        labelled=labelled,
        domain_texts=other,
    )
    assert list(mined.negatives), "nothing to check: mined.negatives is empty"
    assert all(n in other for negs in mined.negatives for n in negs)


def test_mining_errors(rows):
    anchors, positives, corpus, labelled = rows
    with pytest.raises(ConfigError, match="strategy 'model' needs a model"):
        mine(anchors, positives, corpus, MiningConfig(strategy="model"))
    with pytest.raises(ConfigError, match=r"anchors \(60\) and positives \(59\) must have equal length"):
        mine(anchors, positives[:-1], corpus, MiningConfig(strategy="random"))
    with pytest.raises(ConfigError, match="needs a retrieval strategy, got 'none'"):
        mine(anchors, positives, corpus, MiningConfig(strategy="none"))


def test_mined_set_saves_a_valid_hard_negatives_file(tmp_path, rows, tiny_model):
    from training.data.loading import load_dataset

    anchors, positives, corpus, labelled = rows
    mined = mine(
        anchors,
        positives,
        corpus,
        MiningConfig(strategy="bm25", num_negatives=2),
        model=tiny_model,
        labelled=labelled,
    )
    path = mined.save(tmp_path / "mined")
    loaded = load_dataset(path)
    assert loaded.dataset_type.value == "hard_negatives"
    assert list(loaded.frame.columns) == ["anchor", "positive", "negative_1", "negative_2"]
    assert (tmp_path / "mined" / "mining.json").is_file()


def test_nli_contradiction_triplets():
    premises = ["p1", "p1", "p1", "p2", "p2", "p3"]
    hyps = ["e1", "n1", "c1", "e2", "n2", "c3"]
    labels = [0, 1, 2, 0, 1, 2]
    out = nli_triplets(premises, hyps, labels)
    assert list(zip(out.anchors, out.positives, out.negatives, strict=True)) == [("p1", "e1", "c1")]
    assert out.premises_without_pair == 2


def test_dense_rankings_break_ties_by_index():
    q = np.array([[1.0, 0.0]])
    c = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.5, 0.5]])
    assert dense_rankings(q, c, k=3).tolist() == [[1, 2, 3]]


def test_dense_rankings_score_a_large_corpus_in_bounded_blocks(monkeypatch):
    """The same top-k whatever the block size: the block only bounds memory (no query x corpus matrix at once)."""
    import training.mining.retrievers as retrievers

    rng = np.random.default_rng(0)
    q = rng.normal(size=(37, 8)).astype(np.float32)
    c = rng.normal(size=(500, 8)).astype(np.float32)
    whole = dense_rankings(q, c, k=10)
    shapes = []
    real_matmul = np.ndarray.__matmul__

    class Spy(np.ndarray):
        def __matmul__(self, other):
            out = real_matmul(np.asarray(self), other)
            shapes.append(out.shape)
            return out

    monkeypatch.setattr(retrievers, "SCORE_BLOCK_BYTES", 500 * 4 * 5)  # five queries' rows per block
    assert dense_rankings(q.view(Spy), c, k=10).tolist() == whole.tolist()
    assert shapes and max(rows for rows, _ in shapes) == 5 and sum(rows for rows, _ in shapes) == 37
