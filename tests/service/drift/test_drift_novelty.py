"""The novel-query list of a window (service/drift/novelty.py) and what capture keeps of a text
(EMBEDGATE_DRIFT_TEXTS), and the retention period (EMBEDGATE_DRIFT_RETENTION_DAYS)."""

from __future__ import annotations

import datetime
import json
import os
import time

import numpy as np
import pytest

from service.drift.capture import DriftCapture
from service.drift.descriptors import DESCRIPTOR_NAMES
from service.drift.errors import DriftInputError
from service.drift.novelty import NovelQueries, novel_queries, table_rows
from service.drift.retention import expire
from service.drift.settings import DriftSettings, DriftSettingsError
from service.drift.windows import list_windows, read_window

DIM = 8


def unit(vectors) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture
def reference():
    """Reference queries along axes 0-3; the texts say which axis."""
    queries = unit(np.eye(DIM)[:4] + 0.01)
    return queries, [f"reference query {i}" for i in range(4)]


def test_novel_rows_are_grouped_most_novel_first_beside_their_nearest_reference_query(reference):
    queries, texts = reference
    rng = np.random.default_rng(0)
    home = unit(np.eye(DIM)[[0, 1, 2, 3] * 5] + rng.normal(scale=0.05, size=(20, DIM)))
    far = unit(np.eye(DIM)[[7] * 3] + rng.normal(scale=0.02, size=(3, DIM)))  # three paraphrases, one group
    mid = unit(0.3 * np.eye(DIM)[[1]] + np.eye(DIM)[[5]])  # novel, but closer to query 1 than `far` is to any
    vectors = np.vstack([home, far, mid])
    window_texts = [f"home {i}" for i in range(20)] + ["far a", "far b", "far a"] + ["mid"]
    found = novel_queries(vectors, window_texts, queries, texts, cutoff=0.8)
    assert (found.scored_rows, found.novel_rows, found.novel_groups) == (24, 4, 2)
    first, second = found.groups
    assert (first.rows, first.distinct, first.examples) == (3, 2, ("far a", "far b"))  # a repeat counted once
    assert sorted(first.row_ids) == [20, 21, 22]
    assert second.examples == ("mid",) and second.nearest_reference_query == "reference query 1"
    assert first.nearest_reference_cosine < second.nearest_reference_cosine < 0.8
    assert found.ranked_row_ids()[-1] == 23 and set(found.ranked_row_ids()[:3]) == {20, 21, 22}
    assert NovelQueries.from_dict(json.loads(json.dumps(found.to_dict()))) == found
    header, rows, title = table_rows(found)
    assert rows[0][1:4] == ["3", "2", "far a | far b"] and "4 of 24 rows novel" in title


def test_a_window_like_the_reference_lists_nothing(reference):
    queries, texts = reference
    rng = np.random.default_rng(1)
    home = unit(np.eye(DIM)[[0, 1, 2, 3] * 10] + rng.normal(scale=0.05, size=(40, DIM)))
    found = novel_queries(home, [None] * 40, queries, texts, cutoff=0.8)
    assert (found.novel_rows, found.groups, found.texts) == (0, (), "dropped")


def test_without_texts_groups_still_count_rows_and_say_why_there_are_no_examples(reference):
    queries, _ = reference
    far = unit(np.eye(DIM)[[7, 7, 6]] + 0.001)
    found = novel_queries(far, ["sha256:aa", "sha256:aa", "sha256:bb"], queries, (), cutoff=0.5)
    assert found.texts == "hashed" and [g.rows for g in found.groups] == [2, 1]
    assert found.groups[0].nearest_reference_query is None
    assert table_rows(found)[1][0][4] == "(reference without texts)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((unit(np.ones((2, 4))), [None, None]), r"expected window rows \[n, dim\] and reference queries"),
        ((unit(np.ones((2, DIM))), [None]), r"expected one text \(or None\) per row \(2\), got 1"),
    ],
)
def test_bad_inputs_say_what_was_expected(reference, args, message):
    queries, texts = reference
    with pytest.raises(DriftInputError, match=message):
        novel_queries(*args, queries, texts, cutoff=0.5)
    with pytest.raises(DriftInputError, match=r"one reference text per reference query \(4\), got 1"):
        novel_queries(unit(np.ones((1, DIM))), [None], queries, ["only one"], cutoff=0.5)


# ---- what capture keeps of a text ----
@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("keep", "Can my landlord keep the deposit?"),
        ("hash", "sha256:" + __import__("hashlib").sha256(b"Can my landlord keep the deposit?").hexdigest()),
        ("drop", None),
    ],
)
def test_capture_keeps_hashes_or_drops_the_text_after_the_descriptors(tmp_path, mode, expected):
    settings = DriftSettings(dir=tmp_path, sample_rate=1.0, window_rows=10, texts=mode)
    capture = DriftCapture(settings, seed=0)
    text = "Can my landlord keep the deposit?"
    capture.record([text] * 10, unit(np.ones((10, DIM))), [9] * 10, [False] * 10, "v0001", DIM)
    capture.close()
    (info,) = list_windows(settings.windows_dir)
    window = read_window(info, DESCRIPTOR_NAMES)
    assert window.texts == (expected,) * 10
    assert window.descriptors["tokens"][0] == 9  # computed from the text whatever is kept
    if mode != "keep":
        assert text not in info.path.read_text(encoding="utf-8")


def test_a_bad_texts_or_retention_setting_names_the_variable():
    with pytest.raises(DriftSettingsError, match=r"EMBEDGATE_DRIFT_TEXTS='forget'.*'keep', 'hash' or 'drop'"):
        DriftSettings.from_env({"EMBEDGATE_DRIFT_TEXTS": "forget"})
    with pytest.raises(DriftSettingsError, match=r"EMBEDGATE_DRIFT_RETENTION_DAYS='-1'"):
        DriftSettings.from_env({"EMBEDGATE_DRIFT_RETENTION_DAYS": "-1"})


# ---- retention ----
def _stamp(days_ago: float) -> str:
    when = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days_ago)
    return when.strftime("%Y%m%dT%H%M%S.%fZ")


def test_windows_and_verdicts_past_the_retention_period_are_deleted(tmp_path):
    settings = DriftSettings(dir=tmp_path, retention_days=7)
    settings.windows_dir.mkdir(parents=True)
    settings.summaries_dir.mkdir(parents=True)
    names = {age: f"{_stamp(age)}-hhost-p1-rabcd-v0001" for age in (1, 6.9, 7.1, 30)}
    for name in names.values():
        (settings.windows_dir / f"{name}.jsonl").write_text("{}\n")
        (settings.summaries_dir / f"{name}.json").write_text("{}")
    expired = expire(settings)
    assert (expired.windows, expired.summaries, expired.snapshots) == (2, 2, 0)
    kept = sorted(p.stem for p in settings.summaries_dir.glob("*.json"))
    assert kept == sorted([names[1], names[6.9]])
    assert sorted(w.window_id for w in list_windows(settings.windows_dir)) == kept
    assert expire(settings.model_copy(update={"retention_days": 0}), now=time.time() + 1e9).windows == 0


def test_snapshots_past_the_retention_period_are_deleted(tmp_path):
    from service.drift.workspace import DriftWorkspace

    pytest.importorskip("evidently")
    import pandas as pd
    from evidently import Dataset, Report
    from evidently.metrics import MeanValue

    settings = DriftSettings(dir=tmp_path, retention_days=1)
    workspace = DriftWorkspace(settings.workspace_dir)
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    snapshot = Report([MeanValue(column="x")]).run(Dataset.from_pandas(frame), None)
    first = workspace.add_snapshot("v0001", snapshot, drifted=False, keep=10)
    assert expire(settings).snapshots == 0
    assert expire(settings, now=time.time() + 2 * 86400).snapshots == 1
    assert first not in workspace.snapshot_ids("v0001")
    assert os.path.isdir(settings.workspace_dir)
