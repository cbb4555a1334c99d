"""One `embedgate drift` run judges the windows of two replicas writing into one drift location, against the
reference of a version kept in an S3 registry (moto on 127.0.0.1), read through the registry's verified cache: a
shared folder, and the same bucket (EMBEDGATE_DRIFT_DIR=s3://...), where the dashboard's copy shows both."""

from __future__ import annotations

import json

import pytest

from gates.cli import main
from gates.commands import dashboard as dashboard_command
from service.drift.capture import DriftCapture
from service.drift.settings import DriftSettings
from service.drift.workspace import DriftWorkspace
from service.model.embedder import OnnxEmbedder
from service.registry.registry import Registry
from tests.gates.drift_traffic import LEGAL, MEDICAL, WINDOW, legal_reference, sentences, serve

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_one_drift_run_judges_two_replicas_against_the_s3_registry(
    onnx_dir,
    s3_registry_url,
    tmp_path,
    capsys,
    monkeypatch,
    where,
):
    reference = tmp_path / "stage" / "reference"
    legal_reference(onnx_dir, reference, trained=80)
    Registry(s3_registry_url).add_version({"onnx": onnx_dir, "reference": reference}, metadata={})
    drift_dir = tmp_path / "drift" if where == "folder" else s3_registry_url.rsplit("/", 1)[0] + "/drift"
    monkeypatch.setenv("EMBEDGATE_DRIFT_CACHE_DIR", str(tmp_path / "judge-copy"))
    settings = DriftSettings(dir=drift_dir, sample_rate=1.0, window_rows=WINDOW)
    embedder = OnnxEmbedder.from_export_dir(onnx_dir)
    replicas = [DriftCapture(settings), DriftCapture(settings)]  # two writers in one folder
    serve(embedder, replicas[0], sentences(LEGAL, WINDOW, seed=6))
    serve(embedder, replicas[1], sentences(MEDICAL, WINDOW, seed=7))
    for capture in replicas:
        capture.close()
    assert (
        main(
            [
                "drift",
                "--registry",
                s3_registry_url,
                "--drift-dir",
                str(drift_dir),
                "--json",
                "--alert-windows",
                "2",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    judged = result["computed"]
    assert (
        len(judged) == 2 and sum(w["rows"] for w in judged) == 2 * WINDOW
    )  # no row lost, both replicas judged
    assert sorted(w["drifted"] for w in judged) == [
        False,
        True,
    ]  # the legal replica is fine, the medical one not
    if where == "s3":
        # the verdicts went back to the bucket: a second judge (another pod, a fresh copy) has nothing to do
        monkeypatch.setenv("EMBEDGATE_DRIFT_CACHE_DIR", str(tmp_path / "second-judge"))
        assert main(["drift", "--registry", s3_registry_url, "--drift-dir", drift_dir, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["computed"] == []
        # `--list` reads the verdicts from the bucket (a third, empty copy)
        monkeypatch.setenv("EMBEDGATE_DRIFT_CACHE_DIR", str(tmp_path / "lister"))
        assert (
            main(["drift", "--registry", s3_registry_url, "--drift-dir", drift_dir, "--list", "--json"]) == 0
        )
        assert json.loads(capsys.readouterr().out)["alerts"][0]["last_window_id"] == judged[-1]["window_id"]
        # and `embedgate dashboard` serves a copy of the judge's workspace showing both replicas' windows
        served = []
        monkeypatch.setattr(
            dashboard_command, "_serve", lambda workspace, host, port: served.append(workspace)
        )
        monkeypatch.setenv("EMBEDGATE_DRIFT_CACHE_DIR", str(tmp_path / "dashboard-copy"))
        assert main(["dashboard", "--drift-dir", drift_dir]) == 0
        assert served == [tmp_path / "dashboard-copy" / "workspace"]
        assert len(DriftWorkspace(served[0]).snapshot_ids("v0001")) == 2
