"""Backward-compatible spaces (issue 25): the backward map (training/compat.py), the training pairs it is fitted on,
the verdict rule (gates/compat/evaluate.py), which old spaces a run targets (gates/compat/stage.py) and which
offered spaces promotion keeps. The end-to-end path (fit, export, gate, promote, serve with the openai client) is
tests/gates/pipeline/test_pipeline.py::test_an_upgrade_answers_in_the_stored_space_so_old_vectors_gain_without_reembedding."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gates.compat.data import CompatDataError, training_pairs
from gates.compat.evaluate import judge
from gates.compat.stage import CompatTargetError, target_versions
from service.registry.registry import Registry
from tests.service.serving import promote
from training.compat import CompatError, fit_backward_map, least_squares_map


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _spaces(seed=0, n_docs=200, dim=16):
    """Old documents; the new model is an unknown rotation of the old space (plus noise); queries near a doc."""
    rng = np.random.default_rng(seed)
    old_docs = _unit(rng.normal(size=(n_docs, dim))).astype(np.float32)
    rotation = np.linalg.qr(rng.normal(size=(dim, dim)))[0].astype(np.float32)
    new_docs = _unit(old_docs @ rotation + 0.01 * rng.normal(size=old_docs.shape)).astype(np.float32)
    targets = rng.integers(0, n_docs, 300)
    new_queries = _unit(new_docs[targets] + 0.3 * rng.normal(size=(300, dim))).astype(np.float32)
    return old_docs, new_docs, new_queries, [{int(t)} for t in targets], rotation


def test_the_least_squares_start_recovers_a_linear_relation_between_the_spaces():
    old_docs, new_docs, _, _, rotation = _spaces()
    weight = least_squares_map(new_docs, old_docs)
    np.testing.assert_allclose(weight, rotation.T, atol=0.05)  # new = old @ R  ->  old = new @ R^T


def test_the_fitted_map_lets_new_queries_retrieve_the_old_documents():
    old_docs, new_docs, new_queries, positives, _ = _spaces()
    fit = fit_backward_map(new_queries, new_docs, old_docs, positives, [16, 8], seed=0)
    mapped = _unit(new_queries @ fit.weight)
    top1 = np.argmax(mapped @ old_docs.T, axis=1)
    unmapped = np.argmax(new_queries @ old_docs.T, axis=1)  # the new space read as if it were the old one
    hits = np.mean([t in p for t, p in zip(top1, positives, strict=True)])
    assert hits > 0.5 and hits > 3 * np.mean([t in p for t, p in zip(unmapped, positives, strict=True)])
    assert fit.held_out_queries == 45 and fit.held_out_mrr >= fit.start_mrr  # the best held-out map is kept
    assert fit.weight.shape == (16, 16) and fit.to_dict()["held_out_queries"] == 45


def test_backward_map_inputs_that_do_not_fit_together_are_refused_saying_what_is_expected():
    old_docs, new_docs, new_queries, positives, _ = _spaces()
    with pytest.raises(CompatError, match="the same documents embedded by both models"):
        fit_backward_map(new_queries, new_docs[:10], old_docs, positives, [16])
    with pytest.raises(CompatError, match="expected one each"):
        fit_backward_map(new_queries, new_docs, old_docs, positives[:5], [16])
    with pytest.raises(CompatError, match=r"each in 1\.\.16"):
        fit_backward_map(new_queries, new_docs, old_docs, positives, [32])
    with pytest.raises(CompatError, match="outside 0..199"):
        fit_backward_map(new_queries, new_docs, old_docs, [{999}] * len(positives), [16])


def _scores(means: dict[str, float], n=80, seed=0, spread=0.05):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.3, 0.7, n)
    return {name: {f"q{i}": float(np.clip(base[i] + shift + spread * rng.normal(), 0, 1)) for i in range(n)}
            for name, shift in means.items()}  # fmt: skip


def test_a_space_is_offered_only_for_a_gain_beyond_noise_at_the_old_serving_dim():
    gain = {
        64: _scores({"old-old": 0, "compat": 0.08, "new-new": 0.1}),
        32: _scores({"old-old": 0, "compat": 0.06}),
    }
    verdict = judge("v0001", 64, gain)
    assert verdict.offered and verdict.reason.startswith("offered: at v0001's serving dim 64")
    assert "of the re-embedding gain" in verdict.reason
    row = verdict.rows[0]
    assert row["dim"] == 64 and row["beyond_noise"] == "gain" and 0.7 < row["recovered"] < 0.9
    none = {64: _scores({"old-old": 0, "compat": 0.0}), 32: _scores({"old-old": 0, "compat": 0.0})}
    verdict = judge("v0001", 64, none)
    assert not verdict.offered and "is not a gain beyond noise" in verdict.reason


def test_an_offered_space_that_loses_beyond_noise_at_any_dim_is_refused():
    mixed = {64: _scores({"old-old": 0, "compat": 0.08}), 32: _scores({"old-old": 0, "compat": -0.08})}
    verdict = judge("v0001", 64, mixed)
    assert (
        not verdict.offered and "loses to v0001's own queries beyond noise at dim(s) [32]" in verdict.reason
    )


def test_training_pairs_come_from_a_beir_training_split_or_an_anchor_positive_table(tiny_ir_dir, pairs_csv):
    from training.data.loading import load_dataset

    pairs = training_pairs(load_dataset(tiny_ir_dir, "ir"))
    assert len(pairs.queries) == 48 and len(pairs.documents) == 40 and pairs.n_pairs == 96
    assert all(len(p) == 2 for p in pairs.positives)
    table = training_pairs(load_dataset(pairs_csv, "pairs"))
    assert len(table.queries) == len(table.positives) and table.n_pairs >= len(table.queries) > 0


def test_scored_pairs_cannot_train_a_backward_map_and_say_how_to_go_on(tmp_path):
    from tests import synthetic
    from training.data.loading import load_dataset

    path = synthetic.write_csv(
        tmp_path / "sts.csv", ["sentence1", "sentence2", "score"], [("a b", "a c", 3.0)] * 30
    )
    with pytest.raises(CompatDataError, match=r"compatibility: off"):
        training_pairs(load_dataset(path, "sts"))


def _version_with_spaces(registry, onnx_dir, spaces):
    return registry.add_version(
        {"onnx": onnx_dir},
        metadata={"serving_dim": 16, "serve_precision": "fp32", "compatible_spaces": spaces},
        who="tests",
        run_id=f"run-{len(registry.versions())}",
    )


def test_auto_targets_the_champion_and_every_space_it_answers_in(tmp_path, tiny_exports):
    registry = Registry(tmp_path / "registry")
    assert target_versions(registry, "auto", None) == []  # no champion: nothing to be compatible with
    promote(registry, tiny_exports["a"])
    assert target_versions(registry, "auto", None) == ["v0001"]
    _version_with_spaces(registry, tiny_exports["b"], {"v0001": {"serving_dim": 16}})
    # v0003's clients of v0001 keep getting the newest model: its map is trained against v0001 directly
    assert target_versions(registry, "auto", None) == ["v0002", "v0001"]
    assert target_versions(registry, "off", None) == []
    assert target_versions(registry, "auto", ["v0001"]) == ["v0001"]
    with pytest.raises(CompatTargetError, match=r"compatibility.with names \['v0009'\].*servable versions"):
        target_versions(registry, "auto", ["v0009"])


def test_promotion_keeps_offered_spaces_of_this_registry_and_drops_the_rest(tmp_path, tiny_exports):
    from gates.promotion import compatible_spaces
    from training.run_dir import RunPaths

    registry = Registry(tmp_path / "registry")
    promote(registry, tiny_exports["a"])
    promote(registry, tiny_exports["b"])
    run = RunPaths(tmp_path / "run")
    rows = [{"dim": 16, "compat": 0.7, "old-old": 0.5, "new-new": 0.75}]
    for version, offered, fingerprint in (
        ("v0001", True, registry.fingerprint("v0001")),
        ("v0002", True, "another registry's v0002"),
        ("v0003", False, None),
    ):
        folder = run.root / "compat" / version
        folder.mkdir(parents=True)
        record = {"old_version": version, "offered": offered, "serving_dim": 16, "rows": rows}
        (folder / "compat.json").write_text(json.dumps({**record, "old_fingerprint": fingerprint}))
    spaces, dropped = compatible_spaces(run, registry)
    assert spaces == {
        "v0001": {"serving_dim": 16, "dims": [16], "compat": 0.7, "old-old": 0.5, "new-new": 0.75}
    }
    assert dropped == ["v0002: built against another registry's v0002; not promoted"]


def test_a_space_whose_gain_comes_from_answers_seen_in_training_is_refused():
    """SciFact measured: the map learns which documents are answers; on the test queries whose answers no training
    query had, compat lost beyond noise while the whole test set showed a gain. Such a space is refused."""
    seen, new = (
        _scores({"old-old": 0, "compat": 0.15}, n=60, seed=1),
        _scores({"old-old": 0, "compat": -0.08}, n=40, seed=2),
    )
    merged = {name: {**seen[name], **{f"u{q}": v for q, v in new[name].items()}} for name in seen}
    unseen = {f"u{q}" for q in new["compat"]}
    assert judge("v0001", 64, {64: merged}).offered  # without the guard it would be offered
    verdict = judge("v0001", 64, {64: merged}, unseen=unseen)
    assert not verdict.offered and "whose answers no training query had" in verdict.reason
    assert (
        verdict.rows[0]["unseen_answers"]["queries"] == 40 and verdict.rows[0]["unseen_answers"]["ci"][1] < 0
    )
    few = {f"u{q}" for q in list(new["compat"])[:5]}  # too few to judge: the guard is skipped, not failed
    assert "unseen_answers" not in judge("v0001", 64, {64: merged}, unseen=few).rows[0]


def test_a_space_an_earlier_upgrade_already_serves_is_offered_only_beyond_noise_over_that_upgrade():
    """Chained upgrades never take v0001's clients a step back: after v0002@v0001, a candidate's space must beat
    what champion@v0001 serves today (v0002@v0001) beyond noise, at the serving dim and without a loss at any dim."""
    level = _scores({"old-old": 0, "compat": 0.08, "current": 0.08})  # beats v0001, ties v0002@v0001
    verdict = judge("v0001", 64, {64: level}, current="v0002@v0001")
    assert not verdict.offered and verdict.current == "v0002@v0001"
    assert "compat vs v0002@v0001 (what champion@v0001 serves today)" in verdict.reason
    assert "its clients keep v0002@v0001" in verdict.reason
    assert verdict.rows[0]["vs_current"]["beyond_noise"] == "none" and verdict.rows[0]["current"] > 0
    assert judge("v0001", 64, {64: level}).offered  # without an earlier upgrade the same scores are offered
    better = _scores({"old-old": 0, "compat": 0.16, "current": 0.08})
    verdict = judge("v0001", 64, {64: better}, current="v0002@v0001")
    assert verdict.offered and "v0002@v0001 (served today) by +0.0" in verdict.reason
    assert verdict.to_dict()["current"] == "v0002@v0001"
    worse_small = {
        64: _scores({"old-old": 0, "compat": 0.16, "current": 0.08}),
        32: _scores({"old-old": 0, "compat": 0.04, "current": 0.12}),
    }
    verdict = judge("v0001", 64, worse_small, current="v0002@v0001")
    assert not verdict.offered and "loses to v0002@v0001, what champion@v0001 serves today" in verdict.reason
    assert "dim(s) [32]" in verdict.reason


def test_auto_keeps_a_space_an_earlier_version_answers_in_after_a_promotion_that_did_not(
    tmp_path, tiny_exports
):
    """v0002 answers in v0001's space, v0003 could not offer it: v0001's clients are on v0002@v0001, and the next
    candidate still targets v0001 (against v0002@v0001, what they get today)."""
    from gates.compat.stage import current_in_space

    registry = Registry(tmp_path / "registry")
    promote(registry, tiny_exports["a"])
    assert current_in_space(registry, "v0001") is None  # its own version serves it
    _version_with_spaces(registry, tiny_exports["b"], {"v0001": {"serving_dim": 16}})
    name, path = current_in_space(registry, "v0001")
    assert name == "v0002@v0001" and path == registry.version_dir("v0002") / "compat" / "v0001" / "onnx"
    _version_with_spaces(registry, tiny_exports["a"], {})  # v0003: no space offered
    assert target_versions(registry, "auto", None) == ["v0003", "v0001"]
    assert current_in_space(registry, "v0001")[0] == "v0002@v0001"
