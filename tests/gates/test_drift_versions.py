"""Drift during a cutover (issue 31 item 6): pinned clients on v0001 and default clients on v0002, requests taking
turns through the real capture, then judged by `run_drift`. Every window is full and judged against its own
version's reference; before per-version windows, each change of version sealed a window of 3 rows, and none was
judged ("window has 3 rows; the reference was calibrated on windows of >= 20")."""

from __future__ import annotations

import pytest

from service.drift.capture import DriftCapture
from service.drift.runner import run_drift
from service.drift.settings import DriftSettings
from service.model.embedder import OnnxEmbedder
from service.registry.registry import Registry
from tests.gates.drift_traffic import LEGAL, MEDICAL, WINDOW, legal_reference, sentences

pytestmark = pytest.mark.filterwarnings("ignore")
REQUEST = 3  # texts per request, as in the windows of 3 rows


@pytest.fixture(scope="module")
def two_versions(onnx_dir, tmp_path_factory):
    """v0001 and v0002, each with a reference of legal queries (the same model: what matters is that each
    version's windows are judged against its own reference)."""
    root = tmp_path_factory.mktemp("drift-versions")
    legal_reference(onnx_dir, root / "reference")
    registry = Registry(root / "registry")
    for _ in range(2):
        registry.add_version({"onnx": onnx_dir, "reference": root / "reference"}, metadata={})
    return registry


def test_pinned_and_default_clients_on_two_versions_are_each_judged_on_full_windows(
    onnx_dir,
    two_versions,
    tmp_path,
):
    settings = DriftSettings(dir=tmp_path / "drift", sample_rate=1.0, window_rows=WINDOW)
    embedder, capture = OnnxEmbedder.from_export_dir(onnx_dir), DriftCapture(settings)
    traffic = {  # v0001's pinned clients stay in the domain; v0002's default traffic moved to another one
        "v0001": sentences(LEGAL, 3 * WINDOW, seed=21),
        "v0002": sentences(MEDICAL, 3 * WINDOW, seed=22),
    }
    for start in range(0, 3 * WINDOW, REQUEST):
        for version, texts in traffic.items():  # requests take turns, as the route hands them over
            batch = texts[start : start + REQUEST]
            counts = embedder.count_tokens(batch)
            vectors = embedder.embed(batch, dimensions=16)
            capture.record(batch, vectors, counts, [False] * len(batch), version, 16)
    assert capture.close().written == 6 * WINDOW

    result = run_drift(settings, two_versions.root)
    assert result.failed == ()
    judged = [(w.model_version, w.rows, w.skipped, w.drifted) for w in result.computed]
    assert sorted(judged) == [("v0001", WINDOW, False, False)] * 3 + [("v0002", WINDOW, False, True)] * 3
    alerts = {state.model_version: state.alerting for state in result.alerts}
    assert alerts == {"v0001": False, "v0002": True}
    assert result.served_version == "v0002" and result.alerting
