from __future__ import annotations

import numpy as np
import pytest

from training.matryoshka.rotation import (
    RotationData,
    add_rotation,
    choose_rotation,
    decide_rotation,
    fit_rotation,
)


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_model_dir), device="cpu")


def test_rotation_is_orthogonal_and_orders_variance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 8)) * np.array([0.1, 5, 0.2, 3, 0.1, 0.1, 1, 0.1])
    r = fit_rotation(x)
    assert np.allclose(r @ r.T, np.eye(8), atol=1e-5)
    variance = ((x @ r.T) ** 2).mean(axis=0)
    assert np.all(np.diff(variance) <= 1e-6)  # first axes carry the most energy
    a, b = x[:3], x[3:6]
    cos = lambda u, v: (u * v).sum(1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)  # noqa: E731
    assert np.allclose(cos(a, b), cos(a @ r.T, b @ r.T), atol=1e-5)


def test_too_few_texts_is_an_error():
    with pytest.raises(ValueError, match="need at least 8 texts to fit a rotation, got 3"):
        fit_rotation(np.ones((3, 8)))


def test_rotated_model_outputs_rotated_unit_vectors_and_survives_save(tmp_path, tiny_model):
    texts = [f"the patient {i} has heart pain and a fever" for i in range(40)] + ["lease deposit rent"]
    r = fit_rotation(tiny_model.encode(texts))
    original, tiny_model.prompts = tiny_model.prompts, {"query": "query: ", "document": "passage: "}
    try:
        rotated = add_rotation(tiny_model, r)
    finally:
        tiny_model.prompts = original
    assert rotated.prompts == {"query": "query: ", "document": "passage: "}
    names = [type(m).__name__ for m in rotated._modules.values()]
    assert names == ["Transformer", "Pooling", "Dense", "Normalize"]
    before, after = tiny_model.encode(texts[:5]), rotated.encode(texts[:5])
    assert np.allclose(after, before @ r.T, atol=1e-5)
    assert np.allclose(np.linalg.norm(after, axis=1), 1, atol=1e-5)
    rotated.save(str(tmp_path / "m"), safe_serialization=True)
    from sentence_transformers import SentenceTransformer

    reloaded = SentenceTransformer(str(tmp_path / "m"), device="cpu")
    assert np.allclose(reloaded.encode(texts[:5]), after, atol=1e-5)
    assert reloaded.prompts["query"] == "query: " and reloaded.prompts["document"] == "passage: "
    assert not list((tmp_path / "m").rglob("*.bin")) and not list((tmp_path / "m").rglob("*.pkl"))


def _rotation_data(n: int = 30, dev: int = 6) -> RotationData:
    """Anchors whose positive is its own paraphrase; the last `dev` anchors are held out for the decision."""
    anchors = [f"heart pain doctor visit {i}" for i in range(n)] + [
        f"lease tenant rent deposit {i}" for i in range(n)
    ]
    positives = [f"{a} again" for a in anchors]
    labelled = {a: {p} for a, p in zip(anchors, positives, strict=True)}
    corpus = positives + [f"unrelated filler text {i}" for i in range(20)]
    pairs = list(zip(anchors[:-dev], positives[:-dev], strict=True))
    return RotationData(corpus, pairs, labelled, anchors[-dev:])


def test_choose_rotation_modes(tiny_model):
    data = _rotation_data()
    same, decision = choose_rotation(tiny_model, data, [32, 8], mode="off")
    assert same is tiny_model and not decision.applied
    forced, decision = choose_rotation(tiny_model, data, [32, 8], mode="on")
    assert decision.applied and len(forced._modules) == 4
    chosen, decision = choose_rotation(tiny_model, data, [32, 8], mode="auto")
    gain = decision.dev_after["ndcg@10_mean"] - decision.dev_before["ndcg@10_mean"]
    assert decision.dev_gain["mean"] == pytest.approx(gain, abs=1e-4) and decision.dev_gain["n"] == 6
    hurt = any(g["high"] < 0 for g in decision.dev_gain_by_dim.values())
    assert sorted(decision.dev_gain_by_dim) == ["32", "8"]
    # PCA is the default with a truncated dim: applied unless some dim loses beyond noise
    assert decision.applied == (not hurt)
    assert (len(chosen._modules) == 4) == decision.applied
    assert "against the whole 80-text corpus" in decision.reason
    assert decision.fit_texts == 80 + 54  # the corpus and the training anchors


def test_pca_mode_skips_the_refinement(tiny_model, monkeypatch):
    import training.matryoshka.rotation_learning as learning

    def refuse(*args, **kwargs):
        raise AssertionError("rotation: pca must not refine")

    monkeypatch.setattr(learning, "learn_rotation", refuse)
    model, decision = choose_rotation(tiny_model, _rotation_data(), [32, 8], mode="pca")
    assert decision.reason.startswith("rotation (PCA):")
    assert (len(model._modules) == 4) == decision.applied


def test_choose_rotation_without_a_decision_or_enough_texts(tiny_model):
    data = _rotation_data()
    no_dev = RotationData(data.corpus, data.pairs, data.labelled, [])
    same, decision = choose_rotation(tiny_model, no_dev, [32, 8], mode="auto")
    assert same is tiny_model and decision.reason == "no dev set to confirm the rotation helps: not applied"
    tiny = RotationData(data.corpus[:3], [], {}, [])
    same, decision = choose_rotation(tiny_model, tiny, [32, 8], mode="auto")
    assert same is tiny_model and "only 3 texts to fit a 32-dim rotation" in decision.reason


@pytest.mark.parametrize("step", [0, 7])
def test_the_refined_rotation_is_used_only_when_it_beat_pca_on_dev(tiny_model, monkeypatch, step):
    import training.matryoshka.rotation_learning as learning

    permutation = np.eye(32, dtype=np.float32)[::-1].copy()
    calls = []

    def fake_learn(init, anchors, positives, corpus, also_positive, dims, dev_score, seed=0):
        calls.append(dict(init=init, anchors=anchors.shape, positives=positives, also=also_positive))
        return learning.LearnedRotation(permutation if step else init, step, dev_score(init), [])

    monkeypatch.setattr(learning, "learn_rotation", fake_learn)
    data = _rotation_data()
    model, decision = choose_rotation(tiny_model, data, [32, 8], mode="on")
    weight = list(model._modules.values())[2].linear.weight.detach().numpy()
    seen = calls[0]  # the fit on every pair: what the model keeps
    expected = permutation if step else seen["init"]
    assert np.allclose(weight, expected)
    assert ("refined on 54 training pairs for 7 steps" in decision.reason) == bool(step)
    assert seen["anchors"] == (54, 32)
    # a refinement that moved is judged on cross-fitted folds: each pair is in the fit of all folds but its own
    from training.matryoshka.crossfit import FOLDS

    assert len(calls) == (1 + FOLDS if step else 1)
    assert sum(c["anchors"][0] for c in calls[1:]) == ((FOLDS - 1) * 54 if step else 0)
    assert [data.corpus[i] for i in seen["positives"][:2]] == [p for _, p in data.pairs[:2]]
    assert list(seen["also"]), "nothing to check: seen['also'] is empty"
    assert all(not extra for extra in seen["also"])  # each anchor's only positive is its target


def test_rotated_model_exports_with_parity(tmp_path, tiny_model):
    from training.export.export_run import export_run

    texts = [f"the patient {i} has heart pain and a fever" for i in range(40)]
    rotated = add_rotation(tiny_model, fit_rotation(tiny_model.encode(texts)))
    rotated.save(str(tmp_path / "m"), safe_serialization=True)
    result = export_run(tmp_path / "m", tmp_path / "onnx", dims=[32, 16], int8=False)
    assert list(result.graphs), "nothing to check: result.graphs is empty"
    assert all(g.parity.min_cosine >= 0.9999 for g in result.graphs)


def test_in_auto_a_refinement_within_dev_noise_falls_back_to_pca(tiny_model, monkeypatch):
    import training.matryoshka.rotation_learning as learning

    def no_better(init, anchors, positives, corpus, also_positive, dims, dev_score, seed=0):
        # A "refinement" that ran steps but equals PCA: zero gain on every dev query.
        return learning.LearnedRotation(init.copy(), 5, dev_score(init), [])

    monkeypatch.setattr(learning, "learn_rotation", no_better)
    model, decision = choose_rotation(tiny_model, _rotation_data(), [32, 8], mode="auto")
    assert "PCA only: PCA refined on 54 training pairs for 5 steps gained +0.0000" in decision.reason
    # 54 training queries: judged on them, cross-fitted (crossfit.py), not on the 6 dev queries
    from training.matryoshka.crossfit import FOLDS

    assert f"over 54 cross-fitted training queries ({FOLDS} folds): within their noise" in decision.reason
    assert decision.evidence["refinement"]["mean"]["n"] == 54 and not decision.evidence["refinement"]["wins"]
    # too few training queries to cross-fit (24 < crossfit.MIN_QUERIES): the dev queries judge, as before
    model, decision = choose_rotation(tiny_model, _rotation_data(n=15), [32, 8], mode="auto")
    assert "PCA only: PCA refined on 24 training pairs for 5 steps gained +0.0000" in decision.reason
    assert "over 6 dev queries: within the dev set's noise" in decision.reason


def _decide_on_dev_scores(monkeypatch, by_dim, data=None, dims=(32, 16, 8), folds=None, **kwargs):
    """decide_rotation with the dev scorers replaced: `by_dim(matrix)` -> {dim: per-query NDCG@10} (the mean over
    dims follows), and random embeddings for the texts (the scores no longer depend on them). `folds`: the
    cross-fitted folds the learned steps are judged on (crossfit.CrossFit); None: the dev queries judge them."""
    import training.matryoshka.crossfit as crossfit
    import training.matryoshka.rotation as rotation

    monkeypatch.setattr(crossfit, "cross_fit", lambda *a, **k: folds)

    def mean(r):
        return np.mean(list(by_dim(r).values()), axis=0)

    monkeypatch.setattr(
        rotation,
        "_whole_corpus_dev",
        lambda *a: (lambda r: {"ndcg@10_mean": float(mean(r).mean())}, mean, by_dim),
    )
    texts = [f"text {i}" for i in range(40)]
    data = data or RotationData(texts, [], {}, texts[:20])
    encode = lambda t, role: np.random.default_rng(len(t)).normal(size=(len(t), 32)).astype(np.float32)  # noqa: E731
    return decide_rotation(encode, 32, data, list(dims), **kwargs)


def _dev_base(rng, n: int = 20) -> dict:
    return {32: rng.uniform(0.4, 0.6, n), 16: rng.uniform(0.4, 0.6, n), 8: rng.uniform(0.2, 0.4, n)}


@pytest.mark.parametrize(("d16_change", "applied"), [(-0.1, False), (0.0, True)])
def test_a_rotation_that_loses_beyond_noise_at_one_dim_is_not_applied(monkeypatch, d16_change, applied):
    """One graph serves every dim, so a rotation is kept for its mean gain over the dims only if no single dim
    loses beyond noise: here d8 gains 0.3 on every dev query, and d16 loses 0.1 on each (or nothing)."""
    identity = np.eye(32, dtype=np.float32)
    base = _dev_base(np.random.default_rng(0))

    def by_dim(r):
        if np.array_equal(r, identity):
            return dict(base)
        return {32: base[32], 16: base[16] + d16_change, 8: base[8] + 0.3}

    matrix, decision = _decide_on_dev_scores(monkeypatch, by_dim)
    assert decision.dev_gain["low"] > 0  # the mean over dims gains beyond noise either way
    assert decision.applied == applied and (matrix is not None) == applied
    assert decision.dev_gain_by_dim["16"]["mean"] == pytest.approx(d16_change)
    assert ("loses beyond noise at d16 -0.1000" in decision.reason) == (not applied)


@pytest.mark.parametrize(
    ("d8_gain", "verdict"),
    [(0.06, "beyond the dev set's noise): applied"), (0.0, "applied (the PCA ordering is the default")],
)
def test_a_rotation_wins_on_the_smallest_dim_alone_and_pca_is_the_default(monkeypatch, d8_gain, verdict):
    """The rotation exists for the smallest dims; averaged with the full dim (which an orthogonal rotation cannot
    change) its gain there can drown: SciFact's 64d gained +0.030 beyond noise while the mean over four dims was
    within noise. Here the mean stays within noise and only d8 moves: with a gain beyond noise there the rotation
    wins; without one the label-free PCA ordering is still applied as the default, since no dim loses beyond noise
    (the veto is the d16 test above)."""
    identity = np.eye(32, dtype=np.float32)
    rng = np.random.default_rng(0)
    base = _dev_base(rng)
    d16_noise, d8_noise = rng.normal(-0.04, 0.2, 20), rng.normal(0, 0.02, 20)

    def by_dim(r):
        if np.array_equal(r, identity):
            return dict(base)
        return {32: base[32], 16: base[16] + d16_noise, 8: base[8] + d8_gain + d8_noise}

    matrix, decision = _decide_on_dev_scores(monkeypatch, by_dim)
    assert decision.dev_gain["low"] <= 0  # the mean over dims: within noise either way
    assert decision.dev_gain_by_dim["16"]["high"] >= 0  # no dim loses beyond noise
    assert decision.applied and matrix is not None
    assert "; at d8 " in decision.reason and decision.reason.endswith(
        verdict + (": no dim loses beyond noise)" if "default" in verdict else "")
    )


def test_without_a_truncated_dim_there_is_no_default_rotation(monkeypatch):
    """With only the full dim an orthogonal rotation changes nothing, so it is not applied by default."""
    base = np.random.default_rng(0).uniform(0.4, 0.6, 20)
    matrix, decision = _decide_on_dev_scores(monkeypatch, lambda r: {32: base}, dims=[32])
    assert matrix is None and not decision.applied and decision.reason.endswith(": not applied")


@pytest.mark.parametrize(("d8_gain", "refined"), [(0.06, True), (0.0, False)])
def test_the_refinement_is_kept_for_a_gain_at_the_smallest_dim_alone(monkeypatch, d8_gain, refined):
    """Every step of the chain uses the same rule: the refinement beats PCA on a gain beyond noise at the smallest
    dim even when its mean over dims is within noise (and with no gain there it falls back to PCA)."""
    import training.matryoshka.rotation as rotation
    import training.matryoshka.rotation_learning as learning

    permutation = np.eye(32, dtype=np.float32)[::-1].copy()
    monkeypatch.setattr(
        learning, "learn_rotation", lambda init, *a, **k: learning.LearnedRotation(permutation, 9, 0.0, [])
    )
    monkeypatch.setattr(rotation, "_maybe_adapt", lambda chosen, how, *a: (chosen, how, None))
    rng = np.random.default_rng(0)
    base = _dev_base(rng)
    pca = {d: v + 0.3 for d, v in base.items()}  # PCA beats no rotation by far at every dim
    d16_noise, d8_noise = rng.normal(-0.04, 0.2, 20), rng.normal(0, 0.02, 20)

    def by_dim(r):
        if np.allclose(r, np.eye(32)):
            return dict(base)
        if np.array_equal(r, permutation):
            return {32: pca[32], 16: pca[16] + d16_noise, 8: pca[8] + d8_gain + d8_noise}
        return dict(pca)

    matrix, decision = _decide_on_dev_scores(monkeypatch, by_dim, _rotation_data())
    assert decision.applied and np.array_equal(matrix, permutation) == refined
    assert decision.reason.startswith("rotation (PCA only:") != refined
    assert decision.learned_steps == (["refinement"] if refined else [])
    assert "for 9 steps" in decision.reason and "; at d8 " in decision.reason


@pytest.mark.parametrize(
    ("adaptor", "d32_change", "kept"),
    [("auto", 0.0, True), ("auto", -0.1, False), ("off", 0.0, False)],
)
def test_the_adaptor_candidate_is_kept_only_beyond_noise_and_never_when_a_dim_loses(
    monkeypatch, adaptor, d32_change, kept
):
    """Last in the chain, a Matryoshka-Adaptor started from the chosen rotation: kept when dev gains beyond noise
    and no dim (the full one included: the adaptor is not orthogonal) loses beyond noise; never tried with
    adaptor="off". Here the refinement is a no-op, so the chosen rotation is PCA; the adaptor gains 0.2 at d8 on
    every dev query and changes the full dim by `d32_change`."""
    import training.matryoshka.adaptor as adaptors
    import training.matryoshka.rotation as rotation
    import training.matryoshka.rotation_learning as learning

    adapted = np.diag(np.linspace(1.0, 2.0, 32)).astype(
        np.float32
    )  # any matrix the dev scorer can tell apart
    calls = []

    def fake_adaptor(init, texts, dims, anchors, positives, corpus, rank_weight=0.0, seed=0, **_):
        calls.append({"rank_weight": rank_weight, "anchors": anchors.shape})
        return adaptors.LearnedAdaptor(adapted.copy(), 300, [])

    monkeypatch.setattr(adaptors, "learn_adaptor", fake_adaptor)
    monkeypatch.setattr(
        learning,
        "learn_rotation",
        lambda init, *a, **k: learning.LearnedRotation(init.copy(), 0, 0.0, []),
    )
    base = _dev_base(np.random.default_rng(0), n=6)
    gained = {32: base[32] + 0.3, 16: base[16] + 0.3, 8: base[8] + 0.3}  # any rotation beats none

    def by_dim(r):
        if np.allclose(r, np.eye(32)):
            return dict(base)
        if np.array_equal(r, adapted):
            return {32: gained[32] + d32_change, 16: gained[16], 8: gained[8] + 0.2}
        return dict(gained)

    matrix, decision = _decide_on_dev_scores(monkeypatch, by_dim, _rotation_data(), adaptor=adaptor)
    assert decision.applied and matrix is not None  # the rotation itself beats none either way
    assert np.array_equal(matrix, adapted) == kept
    assert len(calls) == (0 if adaptor == "off" else 1)
    if calls:
        assert calls[0]["rank_weight"] == rotation.ADAPTOR_RANK_WEIGHT
        assert calls[0]["anchors"] == (54, 32)  # the training pairs' anchors, one row per pair
        assert ("then a Matryoshka-Adaptor" in decision.reason) == kept
        assert ("loses beyond noise at d32 -0.1000" in decision.reason) == (d32_change < 0)


def _folds(by_dim, per_fold: int = 12, k: int = 5, pairs: int = 54):
    """Cross-fitted folds whose held-out scores come from `by_dim(matrix, fold)` -> {dim: per-query NDCG@10}."""
    from training.matryoshka.crossfit import CrossFit, Fold

    def fold(i):
        return Fold(np.arange(pairs)[np.arange(pairs) % k != i], lambda r: by_dim(r, i))

    return CrossFit([fold(i) for i in range(k)], per_fold * k)


@pytest.mark.parametrize(("held_out_gain", "kept"), [(0.06, True), (0.0, False)])
def test_the_refinement_is_judged_on_cross_fitted_training_queries_not_on_dev(
    monkeypatch, held_out_gain, kept
):
    """The dev queries stop the refinement, so they flatter it: here they show +0.2 at d8 on every dev query. Kept
    only when the folds' held-out training queries (each scored by the refinement fitted without them) gain
    beyond noise too; the evidence (60 queries, 5 folds) is in the decision."""
    import training.matryoshka.rotation_learning as learning

    permutation = np.eye(32, dtype=np.float32)[::-1].copy()
    monkeypatch.setattr(
        learning, "learn_rotation", lambda init, *a, **k: learning.LearnedRotation(permutation, 9, 0.0, [])
    )
    rng = np.random.default_rng(0)
    base, held = _dev_base(rng), {i: _dev_base(rng, 12) for i in range(5)}

    def dev_by_dim(r):
        if np.allclose(r, np.eye(32)):
            return dict(base)
        gain = 0.2 if np.array_equal(r, permutation) else 0.0
        return {32: base[32] + 0.3, 16: base[16] + 0.3, 8: base[8] + 0.3 + gain}

    def fold_by_dim(r, i):
        noise = np.random.default_rng(i).normal(0, 0.02, 12)
        gain = held_out_gain + noise if np.array_equal(r, permutation) else 0.0
        return {32: held[i][32], 16: held[i][16], 8: held[i][8] + gain}

    matrix, decision = _decide_on_dev_scores(
        monkeypatch, dev_by_dim, _rotation_data(), folds=_folds(fold_by_dim), adaptor="off"
    )
    assert decision.applied and np.array_equal(matrix, permutation) == kept
    assert decision.learned_steps == (["refinement"] if kept else [])
    evidence = decision.evidence["refinement"]
    assert evidence["wins"] == kept and evidence["by_dim"]["8"]["n"] == 60
    assert evidence["mean"]["over"] == "cross-fitted training queries (5 folds)"
    assert "over 60 cross-fitted training queries (5 folds)" in decision.reason


def test_each_folds_adaptor_starts_from_that_folds_refinement_and_is_scored_on_its_held_out_queries(
    monkeypatch,
):
    """The adaptor's evidence is cross-fitted the same way: fitted per fold on the other folds' pairs, started
    from what that fold chose (its own refinement, once the refinement is kept), scored against it."""
    import training.matryoshka.adaptor as adaptors
    import training.matryoshka.rotation_learning as learning

    permutation = np.eye(32, dtype=np.float32)[::-1].copy()
    adapted = np.diag(np.linspace(1.0, 2.0, 32)).astype(np.float32)
    monkeypatch.setattr(
        learning, "learn_rotation", lambda init, *a, **k: learning.LearnedRotation(permutation, 9, 0.0, [])
    )
    starts = []

    def fake_adaptor(init, texts, dims, anchors, positives, corpus, rank_weight=0.0, seed=0, **_):
        starts.append((init.copy(), anchors.shape[0]))
        return adaptors.LearnedAdaptor(adapted.copy(), 300, [])

    monkeypatch.setattr(adaptors, "learn_adaptor", fake_adaptor)
    rng = np.random.default_rng(1)
    base, held = _dev_base(rng), {i: _dev_base(rng, 12) for i in range(5)}
    scored = []

    def fold_by_dim(r, i):
        scored.append(
            (
                "adapted"
                if np.array_equal(r, adapted)
                else "permutation"
                if np.array_equal(r, permutation)
                else "other",
                i,
            )
        )
        gain = {"adapted": 0.1, "permutation": 0.05}.get(scored[-1][0], 0.0)
        return {
            32: held[i][32],
            16: held[i][16],
            8: held[i][8] + gain + np.random.default_rng(i).normal(0, 0.01, 12),
        }

    matrix, decision = _decide_on_dev_scores(
        monkeypatch,
        lambda r: {d: v + 0.3 for d, v in base.items()},
        _rotation_data(),
        folds=_folds(fold_by_dim),
    )
    assert np.array_equal(matrix, adapted) and decision.learned_steps == ["refinement", "adaptor"]
    # the fit on every pair (54 anchors) first, then one per fold (each without its fold's pairs)
    assert [n for _, n in starts] == [54] + [
        54 - len(np.arange(54)[np.arange(54) % 5 == i]) for i in range(5)
    ]
    assert all(np.array_equal(init, permutation) for init, _ in starts)  # each fold's refinement, kept
    assert {kind for kind, _ in scored} == {
        "adapted",
        "permutation",
        "other",
    }  # PCA scored against the refinement
    assert decision.evidence["adaptor"]["wins"] and decision.evidence["adaptor"]["mean"]["n"] == 60
