"""MLflow tracking against a real tracking server (sqlite backend, artifacts proxied) started on 127.0.0.1.

The server runs from its own environment (`make mlflow-server` builds .venv-mlflow from
requirements/mlflow-server.txt: full mlflow pins pyarrow<26, which the project's lock cannot take); the pipeline
side uses the mlflow-skinny client from the lock. CI builds the server first, so there a missing server fails."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from gates.cli import main
from tests.service.serving import free_port
from tests.synthetic import write_lay_jargon_beir, write_untrained_run

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]


def mlflow_binary() -> str:
    candidates = [os.environ.get("EMBEDGATE_MLFLOW_SERVER"), str(REPO / ".venv-mlflow" / "bin" / "mlflow")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    if os.environ.get("CI"):
        pytest.fail("the MLflow server is missing: CI must run `make mlflow-server` before the tests")
    pytest.skip("no MLflow server environment: run `make mlflow-server` (or set EMBEDGATE_MLFLOW_SERVER)")


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = open(root / "server.log", "w")
    server = subprocess.Popen(
        [
            mlflow_binary(),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.time() > deadline:
                pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(1)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server's workers are in its process group
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:  # a worker that ignores SIGTERM under load: stop it for sure
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=20)
        log.close()


@pytest.fixture(scope="module")
def gated_run(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("tracked")
    data = write_lay_jargon_beir(root / "data", train_queries=20, test_queries=20)
    run = write_untrained_run(root / "runs" / "r1", tiny_model_dir, data)
    (run / "train").mkdir()
    (run / "train" / "train_log.jsonl").write_text(  # what JsonlLogCallback writes during training
        '{"step": 1, "epoch": 0.5, "loss": 2.5, "learning_rate": 1e-3}\n'
        '{"step": 2, "epoch": 1.0, "loss": 1.5, "eval_dev_ndcg@10_mean": 0.61, "eval_dev_ndcg@10_d32": 0.64}\n'
    )
    assert main(["evaluate", str(run), "--data", str(data), "--registry", str(root / "registry")]) == 0
    assert main(["gate", str(run)]) == 1  # the model against itself: blocked
    assert main(["report", str(run)]) == 0
    return root, run


def _promoted_outcome(run, registry):
    from gates.promotion import promote_run
    from training.run_dir import RunPaths

    promoted = promote_run(RunPaths(run), registry, force=True, reason="tracking test", bento_store=False)
    return {
        "status": "promoted",
        "exit_code": 0,
        "promotion": promoted.to_dict(),
        "stages": [{"name": "evaluate", "status": "passed", "seconds": 3.5}],
    }


def test_a_promoted_run_is_logged_and_registered_as_champion(mlflow_uri, gated_run):
    from mlflow import MlflowClient

    from gates.pipeline.tracking import log_pipeline_run
    from training.run_dir import RunPaths

    root, run = gated_run
    registry = root / "registry"
    config = {"train": {"base_model": "tiny", "epochs": 2}, "gate": {"policy": None}}
    first = log_pipeline_run(
        mlflow_uri,
        "embedgate-test",
        "legal-embedder",
        RunPaths(run),
        _promoted_outcome(run, registry),
        config,
        registry,
    )
    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    logged = client.get_run(first["run_id"])
    assert logged.data.params["train.epochs"] == "2" and logged.data.params["gate.policy"] == "None"
    assert logged.data.tags["embedgate.run_id"] == "r1" and logged.info.status == "FINISHED"
    assert "candidate/onnx-fp32/d32/ndcg_at_10" in logged.data.metrics
    assert logged.data.metrics["stage_seconds/evaluate"] == 3.5
    assert logged.data.metrics["gate/passed"] == 0.0  # a forced promotion: the gate said no, and it shows
    losses = client.get_metric_history(first["run_id"], "train/loss")
    assert [(m.step, m.value) for m in losses] == [(1, 2.5), (2, 1.5)]
    assert [
        m.value for m in client.get_metric_history(first["run_id"], "train/eval_dev_ndcg_at_10_mean")
    ] == [0.61]
    artifacts = {a.path for a in client.list_artifacts(first["run_id"])}
    assert {"report.html", "gate", "model"} <= artifacts
    champion = client.get_model_version_by_alias("legal-embedder", "champion")
    assert champion.version == first["model_version"] == "1" and champion.tags["embedgate.version"] == "v0001"

    # The next promotion: a re-gated copy of the run (the same run twice is refused as a duplicate).
    regated = Path(shutil.copytree(run, run.with_name("r2")))
    second = log_pipeline_run(
        mlflow_uri,
        "embedgate-test",
        "legal-embedder",
        RunPaths(regated),
        _promoted_outcome(regated, registry),
        config,
        registry,
    )
    assert (
        client.get_model_version_by_alias("legal-embedder", "champion").version
        == second["model_version"]
        == "2"
    )
    pointer = Path(client.download_artifacts(second["run_id"], "model/embedgate.json", str(root / "dl")))
    assert '"embedgate_version": "v0002"' in pointer.read_text()


def test_a_blocked_run_is_logged_without_a_model_version(mlflow_uri, gated_run):
    from gates.pipeline.tracking import log_pipeline_run
    from training.run_dir import RunPaths

    _, run = gated_run
    logged = log_pipeline_run(
        mlflow_uri,
        "embedgate-test",
        "legal-embedder",
        RunPaths(run),
        {"status": "blocked", "exit_code": 1, "promotion": None, "stages": []},
        {},
    )
    assert logged["model_version"] is None


def test_an_unreachable_server_is_a_clear_error(gated_run, monkeypatch):
    from gates.pipeline.tracking import TrackingError, log_pipeline_run
    from training.run_dir import RunPaths

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    _, run = gated_run
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(
        TrackingError,
        match=f"tracking.mlflow {uri}: cannot create a run .*check that the tracking server is up",
    ):
        log_pipeline_run(uri, "embedgate-test", "m", RunPaths(run), {"status": "blocked", "exit_code": 1}, {})
