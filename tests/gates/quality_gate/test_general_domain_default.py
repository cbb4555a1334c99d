"""The forgetting check on by default: the packaged general-domain STS set is well formed, real similarity tracks
its scores while a collapsed model does not, the gate warns (or blocks, when the policy says critical) on such a
collapse, and every pipeline config scores the set unless evaluation.general_domain is false."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gates.evaluation.evaluate import load_sts_set
from gates.evaluation.retrieval_metrics import sts_correlations
from gates.pipeline.config import load_pipeline_config
from gates.quality_gate.decision import decide
from gates.quality_gate.policy import default_policy, policy_from_dict
from tests.gates.quality_gate.test_policy import GOOD_PARITY, METRICS, _baseline_per_query, _results, _shifted
from training.data import GENERAL_STS


def test_packaged_set_is_a_usable_sts_table():
    rows = [json.loads(line) for line in GENERAL_STS.read_text(encoding="utf-8").splitlines()]
    sts = load_sts_set(GENERAL_STS)
    assert 150 <= len(sts.scores) == len(rows) <= 250
    assert all(0.0 <= s <= 5.0 for s in sts.scores)
    assert {int(s) for s in sts.scores} == {0, 1, 2, 3, 4, 5}  # every band of the scale is represented
    pairs = list(zip(sts.sentences1, sts.sentences2, strict=True))
    assert len(set(pairs)) == len(pairs) and all(a != b for a, b in pairs)
    assert "CC BY 4.0" in (GENERAL_STS.parent / "README.md").read_text(encoding="utf-8")


def _word_overlap(texts, vocabulary):
    """A crude general model: normalised bag of words, which tracks everyday similarity somewhat."""
    from sklearn.feature_extraction.text import CountVectorizer

    vectors = CountVectorizer(vocabulary=vocabulary).transform(texts).toarray().astype(float) + 1e-9
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _spearman_of_word_overlap_and_collapse() -> tuple[float, float]:
    from sklearn.feature_extraction.text import CountVectorizer

    sts = load_sts_set(GENERAL_STS)
    vocabulary = CountVectorizer().fit(sts.sentences1 + sts.sentences2).vocabulary_
    general = sts_correlations(
        _word_overlap(sts.sentences1, vocabulary), _word_overlap(sts.sentences2, vocabulary), sts.scores
    )
    # Collapsed outside its domain: every everyday sentence lands near one point, the rest is noise.
    rng = np.random.default_rng(0)
    centre = rng.normal(size=64)
    first, second = (centre + 0.05 * rng.normal(size=(len(sts.scores), 64)) for _ in range(2))
    collapsed = sts_correlations(first, second, sts.scores)
    return general.spearman, collapsed.spearman


@pytest.mark.parametrize(("severity", "passes"), [("warning", True), ("critical", False)])
def test_a_model_collapsed_outside_its_domain_is_flagged_as_the_policy_says(severity, passes):
    general, collapsed = _spearman_of_word_overlap_and_collapse()
    assert general > 0.4 and abs(collapsed) < 0.2, (general, collapsed)
    baseline_queries = _baseline_per_query()
    # In-domain the candidate is clearly better: only the forgetting check may object.
    candidate = _results("candidate", _shifted(baseline_queries, {m: 0.05 for m in METRICS}), sts=collapsed)
    baseline = _results("baseline", baseline_queries, sts=general)
    raw = default_policy().model_dump()
    for check in raw["checks"]:
        if check["kind"] == "general_domain":
            check["severity"] = severity
    decision = decide(policy_from_dict(raw), candidate, baseline, parity=GOOD_PARITY)
    row = next(r for r in decision.rows if r.check == "general_domain_sts")
    assert (row.status, row.severity) == ("fail", severity)
    assert row.delta == pytest.approx(collapsed - general) and "beyond 0.02" in row.reason
    assert decision.passed is passes
    assert "general_domain_sts" in decision.table()


def test_every_pipeline_scores_the_packaged_set_unless_turned_off(tmp_path):
    default = load_pipeline_config(None, {"data.path": "data"})
    assert default.evaluation.general_domain is True and default.general_sts() == GENERAL_STS
    off = load_pipeline_config(None, {"data.path": "data", "evaluation.general_domain": False})
    assert off.general_sts() is None
    own = tmp_path / "mine.csv"
    own.write_text("sentence1,sentence2,score\na,b,1\n", encoding="utf-8")
    config = tmp_path / "pipeline.yaml"
    config.write_text("data: {path: data}\nevaluation: {general_sts: mine.csv}\n", encoding="utf-8")
    assert load_pipeline_config(config).general_sts() == own.resolve()


def test_the_pipelines_check_leaves_out_the_sentences_the_rotation_was_fitted_on(tmp_path):
    """The rotation's PCA sample includes half the packaged general sentences (training/data/general_texts.py): the
    general-domain check scores only rows of the other half, so it measures text the fit never saw; a user's own
    STS table is never fitted on and is scored whole."""
    from training.data.general_texts import rotation_fit_texts

    fitted = rotation_fit_texts(GENERAL_STS)
    whole, held = load_sts_set(GENERAL_STS), load_sts_set(GENERAL_STS, exclude=fitted)
    assert fitted and 0 < len(held.scores) < len(whole.scores)
    assert not fitted & (set(held.sentences1) | set(held.sentences2))
    assert {int(s) for s in held.scores} == {0, 1, 2, 3, 4, 5}  # still every band of the scale
    own = tmp_path / "own.jsonl"
    own.write_text(GENERAL_STS.read_text(encoding="utf-8"), encoding="utf-8")
    assert rotation_fit_texts(own) == set()
