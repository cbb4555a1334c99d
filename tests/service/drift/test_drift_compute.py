"""Drift judgement on synthetic embeddings (no model): same-distribution traffic replayed through the capture never
alarms, a shifted or junk stream is flagged within a bounded number of requests, and every way a window or a
reference can be unusable is reported, not raised at the service."""

from __future__ import annotations

import json
import logging
import random
import time
import warnings

import numpy as np
import pytest

from service.drift.calibration import calibrate, reference_spec
from service.drift.capture import DriftCapture
from service.drift.descriptors import DESCRIPTOR_NAMES, describe_texts
from service.drift.errors import DriftInputError, DriftReferenceError
from service.drift.monitor import ALERT_EVENT, DriftMonitor
from service.drift.reference import load_reference, write_reference
from service.drift.runner import alert_states, run_drift, write_summary
from service.drift.settings import DriftSettings
from service.drift.signals import embedding_drift_score, nearest_doc_cosine
from service.drift.workspace import DriftWorkspace, project_name
from service.registry.registry import Registry

DIM = 16
WINDOW = 40
LEGAL = "lease tenant landlord rent deposit contract clause party agreement breach court claim notice".split()
MEDICAL = "heart blood pressure pain doctor kidney liver dose drug tablet fever cough nurse".split()
pytestmark = pytest.mark.filterwarnings("ignore")


class Domain:
    """Unit vectors scattered around a centre, and sentences from a word list: one kind of traffic."""

    def __init__(self, seed: int, words: list[str]) -> None:
        rng = np.random.default_rng(seed)
        self.centre = rng.normal(size=DIM)
        self.centre /= np.linalg.norm(self.centre)
        self.words = words

    def vectors(self, rng: np.random.Generator, count: int) -> np.ndarray:
        vectors = self.centre + rng.normal(scale=0.35, size=(count, DIM))
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)

    def texts(self, rng: random.Random, count: int) -> list[str]:
        return [" ".join(rng.choices(self.words, k=rng.randint(4, 12))) + "?" for _ in range(count)]


LEGAL_DOMAIN, MEDICAL_DOMAIN = Domain(1, LEGAL), Domain(2, MEDICAL)
JUNK = ["   ", "#### 1234 ----", "日本語のテキストです", "🙂🙂🙂", "0000-1111-2222", "!!!"]


def token_counts(texts: list[str]) -> list[int]:
    return [len(text.split()) + 2 for text in texts]


def promote_reference(
    root, window_rows: int = WINDOW, queries: int = 120, version_count: int = 1, held_out: int = 60
):
    """A registry whose versions carry a reference built from legal traffic, the last `held_out` queries marked
    never trained on (what promotion does, minus the embedder)."""
    rng, text_rng = np.random.default_rng(10), random.Random(10)
    query_vectors, corpus_vectors = LEGAL_DOMAIN.vectors(rng, queries), LEGAL_DOMAIN.vectors(rng, 80)
    query_texts, corpus_texts = LEGAL_DOMAIN.texts(text_rng, queries), LEGAL_DOMAIN.texts(text_rng, 80)
    query_rows = describe_texts(query_texts, token_counts(query_texts), [False] * queries)
    corpus_rows = describe_texts(corpus_texts, token_counts(corpus_texts), [False] * 80)
    mask = np.arange(queries) >= queries - held_out
    spec = reference_spec(query_vectors, mask, corpus_vectors, query_rows, DIM, window_rows, splits=15)
    write_reference(
        root / "stage" / "reference", spec, query_vectors, corpus_vectors, query_rows, corpus_rows, mask
    )
    registry = Registry(root / "registry")
    for _ in range(version_count):
        registry.add_version({"reference": root / "stage" / "reference"}, metadata={})
    return registry


class Traffic:
    """Serves synthetic requests into a DriftCapture, 10 texts per request, as the service's route does."""

    def __init__(self, capture: DriftCapture, version: str = "v0001", seed: int = 0) -> None:
        self.capture, self.version = capture, version
        self.rng, self.text_rng = np.random.default_rng(seed), random.Random(seed)
        self.texts_served = 0

    def serve(self, domain: Domain | None, texts: int, dim: int = DIM) -> None:
        for _ in range(texts // 10):
            batch = domain.texts(self.text_rng, 10) if domain else self.text_rng.choices(JUNK, k=10)
            vectors = (domain or MEDICAL_DOMAIN).vectors(self.rng, 10)
            if domain is None:  # junk embeds near one point, whatever it says
                vectors = np.repeat(vectors[:1], 10, axis=0)
            if dim < DIM:
                vectors = vectors[:, :dim] / np.linalg.norm(vectors[:, :dim], axis=1, keepdims=True)
            self.capture.record(batch, vectors, token_counts(batch), [False] * 10, self.version, dim)
            self.texts_served += 10
        assert self.capture.wait_idle()


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    return promote_reference(tmp_path_factory.mktemp("drift-registry"))


def settings_for(tmp_path, **overrides) -> DriftSettings:
    return DriftSettings(
        **{"dir": tmp_path / "drift", "sample_rate": 1.0, "window_rows": WINDOW, **overrides}
    )


# ---- the acceptance replay ----
def test_same_distribution_traffic_never_alarms_and_a_shift_is_flagged_within_one_window(tmp_path, registry):
    settings = settings_for(tmp_path)
    capture = DriftCapture(settings, seed=0)
    traffic = Traffic(capture)
    traffic.serve(LEGAL_DOMAIN, 24 * WINDOW)  # held-out legal traffic: fresh draws, not the reference rows
    same = run_drift(settings, registry.root)
    assert len(same.computed) == 24 and not same.failed
    assert [w.window_id for w in same.computed if w.drifted] == []  # zero false alarms in 24 windows
    assert not same.alerting and same.served_version == "v0001"
    embedding_scores = [w.signal("embedding").score for w in same.computed]
    assert max(embedding_scores) < same.computed[0].signal("embedding").threshold

    served_before_shift, first_flag, alert_at = traffic.texts_served, None, None
    while alert_at is None and traffic.texts_served < served_before_shift + 10 * WINDOW:
        traffic.serve(MEDICAL_DOMAIN, WINDOW)
        result = run_drift(settings, registry.root)
        if first_flag is None and any(w.drifted for w in result.computed):
            first_flag = traffic.texts_served - served_before_shift
        if result.alerting:
            alert_at = traffic.texts_served - served_before_shift
    capture.close()
    assert first_flag == WINDOW  # the first all-shifted window is flagged
    assert alert_at == settings.alert_windows * WINDOW  # and the alert holds after ALERT_WINDOWS of them


def test_junk_traffic_is_flagged_by_embeddings_and_descriptors(tmp_path, registry):
    settings = settings_for(tmp_path)
    capture = DriftCapture(settings, seed=1)
    Traffic(capture, seed=1).serve(None, WINDOW)
    capture.close()
    (window,) = run_drift(settings, registry.root).computed
    assert window.drifted and window.signal("embedding").drifted
    descriptors = window.signal("descriptors")
    assert descriptors.drifted and descriptors.detail["per_descriptor"]["emptyish"]["p_value"] < 0.05


# ---- windows that cannot be judged ----
def test_a_window_smaller_than_the_calibration_is_skipped_with_the_fix(tmp_path, registry):
    settings = settings_for(tmp_path, window_rows=20)
    capture = DriftCapture(settings)
    Traffic(capture).serve(MEDICAL_DOMAIN, 20)
    capture.close()
    (window,) = run_drift(settings, registry.root).computed
    assert window.skipped and not window.drifted
    assert "EMBEDGATE_DRIFT_WINDOW_ROWS >= 30" in window.skipped_reason  # half the 60 held-out queries


def test_rows_served_below_the_reference_dim_count_only_for_descriptors(tmp_path, registry):
    settings = settings_for(tmp_path)
    capture = DriftCapture(settings)
    Traffic(capture).serve(MEDICAL_DOMAIN, WINDOW, dim=8)
    capture.close()
    (window,) = run_drift(settings, registry.root).computed
    assert window.embedding_rows == 0 and not window.skipped
    assert (
        window.signal("embedding").score is None
        and "dim >= 16" in window.signal("embedding").detail["reason"]
    )
    assert window.signal("descriptors").score is not None


def test_a_version_without_reference_is_recorded_as_skipped_never_an_alarm(tmp_path, registry):
    settings = settings_for(tmp_path)
    capture = DriftCapture(settings)
    Traffic(capture, version="v0042").serve(MEDICAL_DOMAIN, WINDOW)
    capture.close()
    result = run_drift(settings, registry.root)
    (window,) = result.computed
    assert window.skipped and "version v0042 not found" in window.skipped_reason and not result.alerting


def test_a_reference_changed_after_promotion_is_refused(tmp_path):
    registry = promote_reference(tmp_path)
    (registry.version_dir("v0001") / "reference" / "queries.npy").write_bytes(b"tampered")
    settings = settings_for(tmp_path)
    capture = DriftCapture(settings)
    Traffic(capture).serve(LEGAL_DOMAIN, WINDOW)
    capture.close()
    (window,) = run_drift(settings, registry.root).computed
    assert window.skipped and "does not match the version's manifest" in window.skipped_reason


# ---- alert streak ----
def verdict(window_id: str, version: str, drifted: bool, skipped: bool = False) -> dict:
    return {
        "window_id": window_id,
        "model_version": version,
        "rows": 40,
        "embedding_rows": 40,
        "started_at": "",
        "ended_at": None,
        "computed_at": "",
        "computed_at_unix": 0.0,
        "drifted": drifted,
        "signals": [],
        "skipped_reason": "no reference" if skipped else None,
    }


def test_the_alert_counts_drifted_windows_in_a_row_and_skipped_ones_do_not_break_it(tmp_path):
    from service.drift.compute import WindowDriftResult

    history = [
        ("a1", False, False),
        ("a2", True, False),
        ("a3", True, False),
        ("a4", False, True),
        ("a5", True, False),
    ]
    for window_id, drifted, skipped in history:
        write_summary(tmp_path, WindowDriftResult.from_dict(verdict(window_id, "v0001", drifted, skipped)))
    (state,) = alert_states(tmp_path, alert_windows=3)
    assert (state.consecutive, state.alerting, state.last_window_id) == (3, True, "a5")
    write_summary(tmp_path, WindowDriftResult.from_dict(verdict("a6", "v0001", False)))
    assert alert_states(tmp_path, alert_windows=3)[0].consecutive == 0


def test_a_retired_versions_streak_does_not_alert_for_the_served_one(tmp_path):
    from service.drift.compute import WindowDriftResult

    registry = promote_reference(tmp_path, version_count=2)  # v0002 is the champion
    settings = settings_for(tmp_path, alert_windows=2)
    for window_id in ("b1", "b2", "b3"):
        write_summary(settings.summaries_dir, WindowDriftResult.from_dict(verdict(window_id, "v0001", True)))
    result = run_drift(settings, registry.root)
    assert result.alert_for("v0001").alerting and result.served_version == "v0002" and not result.alerting


# ---- Evidently workspace and the monitor ----
def test_each_version_gets_a_project_with_dashboard_and_snapshots_are_pruned(tmp_path, registry):
    settings = settings_for(tmp_path, keep_snapshots=2)
    capture = DriftCapture(settings)
    Traffic(capture).serve(MEDICAL_DOMAIN, 3 * WINDOW)
    capture.close()
    result = run_drift(settings, registry.root)
    workspace = DriftWorkspace(settings.workspace_dir)
    assert list(workspace.projects()) == [project_name("v0001")]
    assert len(workspace.snapshot_ids("v0001")) == 2  # 3 windows, the oldest snapshot pruned
    stored = json.loads(
        next(settings.workspace_dir.rglob(f"{result.computed[-1].snapshot_id}.json")).read_text()
    )
    assert "drifted" in stored["tags"]
    dashboard = workspace.dashboard("v0001")
    assert [tab.title for tab in dashboard.tabs] == ["Drift", "Descriptors"]
    titles = [panel.title for panel in dashboard.panels]
    assert "Embedding drift vs threshold" in titles and "Descriptor drift vs threshold" in titles
    assert workspace.dashboard("v0404") is None


def test_the_monitor_publishes_gauges_and_logs_one_json_alert_line(tmp_path, registry, caplog):
    from prometheus_client import CollectorRegistry

    from service.drift.gauges import drift_gauges

    settings = settings_for(tmp_path, alert_windows=2)
    metrics = CollectorRegistry()
    monitor = DriftMonitor(settings, registry.root, gauges=drift_gauges(metrics))
    capture = DriftCapture(settings)
    Traffic(capture).serve(MEDICAL_DOMAIN, 2 * WINDOW)
    capture.close()
    with caplog.at_level(logging.INFO, logger="embedgate.drift"):
        monitor.run_once()
    alerts = [json.loads(r.message) for r in caplog.records if r.levelno == logging.WARNING]
    assert len(alerts) == 1 and alerts[0]["event"] == ALERT_EVENT
    assert alerts[0]["consecutive_drifted_windows"] == 2 and alerts[0]["signals"]["embedding"]["drifted"]
    value = metrics.get_sample_value
    assert value("embedgate_drift_detected", {"model_version": "v0001"}) == 1.0
    assert value("embedgate_drift_alert", {"model_version": "v0001"}) == 1.0
    assert value("embedgate_drift_window_rows", {"model_version": "v0001"}) == WINDOW
    assert value("embedgate_drift_score", {"model_version": "v0001", "signal": "embedding"}) > 0.9
    assert value("embedgate_drift_threshold", {"model_version": "v0001", "signal": "embedding"}) >= 0.55
    assert value("embedgate_drift_last_computed_timestamp_seconds", {"model_version": "v0001"}) > 1.7e9


def test_the_monitor_thread_runs_passes_until_stopped(tmp_path, registry):
    settings = settings_for(tmp_path, interval_s=0.05)
    capture = DriftCapture(settings)
    Traffic(capture).serve(LEGAL_DOMAIN, WINDOW)
    capture.close()
    monitor = DriftMonitor(settings, registry.root)
    monitor.start()
    assert monitor.running
    try:
        for _ in range(400):
            if monitor.last_result is not None and monitor.last_result.computed:
                break
            time.sleep(0.05)
    finally:
        monitor.stop()
    assert not monitor.running
    assert monitor.last_result is not None and not monitor.last_result.computed[0].drifted
    assert DriftMonitor.from_env(registry.root, {"EMBEDGATE_DRIFT_SAMPLE_RATE": "0"}) is None


# ---- bad inputs ----
def test_load_reference_explains_what_is_wrong(tmp_path, registry):
    with pytest.raises(
        DriftReferenceError, match=r"not a drift reference, missing \['queries.npy'.*rebuild it"
    ):
        load_reference(tmp_path)
    ref_dir = registry.version_dir("v0001") / "reference"
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in ref_dir.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    spec = json.loads((copy / "reference.json").read_text())
    (copy / "reference.json").write_text(json.dumps({**spec, "query_count": 7}))
    with pytest.raises(
        DriftReferenceError, match=r"queries.npy has shape \(120, 16\), reference.json says \(7, 16\)"
    ):
        load_reference(copy)
    (copy / "reference.json").write_text(json.dumps({**spec, "format_version": 99}))
    with pytest.raises(DriftReferenceError, match=r"format_version 99, this runtime reads 2"):
        load_reference(copy)
    with pytest.raises(DriftReferenceError, match=r"already holds a drift reference"):
        write_reference(copy, load_reference(ref_dir).spec, np.zeros((1, 2)), np.zeros((1, 2)), [], [], [])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"queries": np.zeros((5, DIM))}, r"at least 20 reference queries .* got shape \(5, 16\)"),
        ({"window_rows": 3}, r"window_rows: expected an integer >= 10 .* got 3"),
        ({"splits": 1}, r"splits: expected an integer >= 5"),
        (
            {"alarm_signals": ("embeding",)},
            r"alarm_signals: expected a non-empty subset of .* got \['embeding'\]",
        ),
        (
            {"held_out": [True] * 3},
            r"held_out: expected 40 booleans \(one per reference query, True = never trained on\), "
            r"got bool \(3,\)",
        ),
    ],
)
def test_calibrate_refuses_bad_inputs(kwargs, message):
    rng = np.random.default_rng(0)
    arguments = {
        "queries": LEGAL_DOMAIN.vectors(rng, 40),
        "query_descriptors": {},
        "corpus": LEGAL_DOMAIN.vectors(rng, 10),
        "window_rows": 20,
        **kwargs,
    }
    with pytest.raises(DriftInputError, match=message):
        calibrate(**arguments)


def test_signal_functions_refuse_mismatched_arrays():
    with pytest.raises(DriftInputError, match=r"same dim; got 16 and 8"):
        embedding_drift_score(np.ones((10, 16)), np.ones((10, 8)))
    with pytest.raises(DriftInputError, match=r"at least 4 distinct rows per side; got 1 current"):
        embedding_drift_score(np.ones((10, 16)), np.eye(16))  # ten copies of one row are one row
    with pytest.raises(DriftInputError, match=r"expected a 2-d array \[rows, dim\], got shape \(16,\)"):
        nearest_doc_cosine(np.ones(16), np.ones((3, 16)))


def test_run_drift_names_unknown_window_ids(tmp_path, registry):
    with pytest.raises(DriftInputError, match=r"windows \['nope'\] are not on disk .*embedgate drift --list"):
        run_drift(settings_for(tmp_path), registry.root, window_ids=["nope"])


def test_a_pass_never_overlaps_another_and_a_busy_monitor_skips_its_turn(tmp_path, registry):
    import fcntl

    from service.drift.runner import RUN_LOCK

    settings = settings_for(tmp_path)
    capture = DriftCapture(settings)
    Traffic(capture).serve(LEGAL_DOMAIN, WINDOW)
    capture.close()
    with open(settings.dir / RUN_LOCK, "a+") as other_pass:  # another worker's monitor is judging
        fcntl.flock(other_pass, fcntl.LOCK_EX)
        assert run_drift(settings, registry.root, wait=False).computed == ()
        fcntl.flock(other_pass, fcntl.LOCK_UN)
    assert len(run_drift(settings, registry.root, wait=False).computed) == 1


def test_a_descriptor_constant_in_a_window_raises_no_numpy_warnings():
    # Evidently correlates descriptor columns; a constant one made numpy warn 0/0 once per window (hundreds of
    # lines in a pipeline's calibration output).
    from service.drift.compute import descriptor_drift_share

    rng = np.random.default_rng(0)
    current = {name: rng.normal(size=200) for name in DESCRIPTOR_NAMES}
    reference = {name: rng.normal(size=400) for name in DESCRIPTOR_NAMES}
    current[DESCRIPTOR_NAMES[0]] = np.zeros(200)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        share = descriptor_drift_share(current, reference)
    assert 0.0 < share <= 1.0


def test_novelty_needs_40_held_out_queries_to_alarm_and_the_calibration_says_why():
    rng, text_rng = np.random.default_rng(3), random.Random(3)
    queries, corpus = LEGAL_DOMAIN.vectors(rng, 100), LEGAL_DOMAIN.vectors(rng, 30)
    texts = LEGAL_DOMAIN.texts(text_rng, 100)
    rows = describe_texts(texts, token_counts(texts), [False] * 100)
    spec = reference_spec(queries, np.arange(100) >= 75, corpus, rows, DIM, WINDOW, splits=6)
    assert spec.held_out_count == 25 and spec.calibration.alarm_signals == ("embedding", "retrieval")
    assert spec.calibration.excluded == {
        "novelty": "25 held-out queries (never trained on), 40 needed to calibrate "
        "novelty on unseen traffic: reported, not in the alarm"
    }
    assert spec.calibration.current_rows == 12  # pseudo-windows of half the held-out queries
    # The baselines come from the held-out queries only.
    assert spec.retrieval_reference_mean == pytest.approx(
        float(nearest_doc_cosine(queries[75:], corpus).mean())
    )


def test_an_exact_ks_test_that_falls_back_to_asymptotic_raises_no_warning():
    # Issue 31 item 13: scipy's "ks_2samp: Exact calculation unsuccessful" reached the pipeline's terminal. Two
    # equal-sized samples one value apart (calibration's pseudo-windows are half the queries against the other
    # half) make the exact p-value round above 1; scipy then uses the asymptotic one, which is correct here.
    from service.drift.compute import descriptor_drift_share

    current = {name: np.arange(83.0) for name in DESCRIPTOR_NAMES}
    reference = {name: np.arange(83.0) for name in DESCRIPTOR_NAMES}
    reference[DESCRIPTOR_NAMES[0]][0] = 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        share = descriptor_drift_share(current, reference)
    assert share == 0.0  # one value of 83 moved by half: nothing drifted
