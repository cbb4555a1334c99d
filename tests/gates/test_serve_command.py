"""`embedgate serve`: the bentoml command line and environment it builds, and the settings it refuses up front."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gates.cli import main
from gates.serve_process import METRICS_DIR_PREFIX, SERVICE, serve_command
from service.settings import SettingsError


def _command(**overrides):
    options = dict(
        registry=None,
        host="127.0.0.1",
        port=3000,
        api_key_env=None,
        workers=1,
        precision=None,
        threads=None,
        poll_interval=None,
        environ={},
    )
    options.update(overrides)
    return serve_command(**options)


def test_flags_become_embedgate_variables_and_bentoml_arguments(tmp_path):
    argv, env = _command(
        registry=tmp_path / "registry",
        port=3123,
        host="0.0.0.0",
        api_key_env="MY_KEY",
        precision="int8",
        poll_interval=0.5,
        environ={"MY_KEY": " s3cret "},
    )
    assert (
        argv[1:]
        == [
            "-m",
            "gates.serve_process",  # bentoml, with a Prometheus folder of its own (tests/gates/test_serve_replicas.py)
            "serve",
            SERVICE,
            "--host",
            "0.0.0.0",
            "--port",
            "3123",
            "--timeout-graceful-shutdown",
            "30",
        ]
    )
    assert "s3cret" not in " ".join(argv)  # the key travels in the environment, not on the command line
    assert env["EMBEDGATE_API_KEY"] == "s3cret" and env["EMBEDGATE_PRECISION"] == "int8"
    assert env["EMBEDGATE_REGISTRY"] == str((tmp_path / "registry").resolve())
    assert env["EMBEDGATE_POLL_INTERVAL_S"] == "0.5"
    assert env["BENTOML_CONFIG_OPTIONS"] == "services.embedgate.workers=1"


def test_workers_share_the_cores_unless_threads_are_given():
    _, env = _command(workers=2, environ={"BENTOML_CONFIG_OPTIONS": "api_server.metrics.enabled=true"})
    assert env["BENTOML_CONFIG_OPTIONS"] == "api_server.metrics.enabled=true services.embedgate.workers=2"
    assert int(env["EMBEDGATE_THREADS"]) >= 1
    _, env = _command(workers=2, threads=3)
    assert env["EMBEDGATE_THREADS"] == "3"
    _, env = _command(workers=1)
    assert "EMBEDGATE_THREADS" not in env


def test_an_unset_key_variable_is_refused_before_starting():
    with pytest.raises(
        SettingsError, match=r"--api-key-env MY_KEY: that environment variable is unset or empty"
    ):
        _command(api_key_env="MY_KEY", environ={"MY_KEY": "  "})


def test_bad_settings_exit_2_with_the_variable_named(capsys):
    assert main(["serve", "--precision", "bf16", "--registry", str(Path("registry"))]) == 2
    assert "EMBEDGATE_PRECISION='bf16': Input should be 'fp32', 'int8' or 'fp16'" in capsys.readouterr().err
    assert main(["serve", "--port", "0"]) == 2


def test_the_launcher_exits_as_bentoml_does_and_leaves_no_metrics_folder(tmp_path):
    """`python -m gates.serve_process ARGS` is `bentoml ARGS` with a metrics folder of its own, gone afterwards."""
    import subprocess
    import sys

    env = {**os.environ, "TMPDIR": str(tmp_path)}
    launcher = [sys.executable, "-m", "gates.serve_process"]
    done = subprocess.run([*launcher, "--version"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "bentoml" in done.stdout.lower(), done.stderr[-2000:]
    failed = subprocess.run(
        [*launcher, "serve", "no_such_module:Service"], env=env, capture_output=True, text=True, timeout=120
    )
    assert failed.returncode != 0
    assert not list(tmp_path.glob(f"{METRICS_DIR_PREFIX}*"))
