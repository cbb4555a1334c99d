"""A real S3-compatible HTTP server for tests: moto's standalone server on 127.0.0.1, a free port, stopped after.

moto (boto3/botocore) cannot live in the project venv (botocore requires python-dateutil<3, the lock pins 4), so it
has a venv of its own: `make s3-test-server` builds `.venv-s3` from requirements/s3-test-server.txt (`make test`
does it first). EMBEDGATE_TEST_MOTO_SERVER may name another `moto_server` executable.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.serving import free_port

REPO = Path(__file__).resolve().parents[2]


def moto_server_executable() -> str:
    configured = os.environ.get("EMBEDGATE_TEST_MOTO_SERVER")
    path = Path(configured) if configured else REPO / ".venv-s3" / "bin" / "moto_server"
    if not path.is_file():
        pytest.fail(
            f"no moto_server at {path}: run `make s3-test-server` (builds .venv-s3 from "
            f"requirements/s3-test-server.txt) or set EMBEDGATE_TEST_MOTO_SERVER"
        )
    return str(path)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The moto server's URL; the process is stopped (and reaped) at the end of the session."""
    port = free_port()
    proc = subprocess.Popen(
        [moto_server_executable(), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"moto_server did not start on {url} (exit code {proc.poll()})"
                    ) from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The standard AWS_* variables pointing at the server (as a user would set them), for this process and
    subprocesses; returns them."""
    env = {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def s3_registry_url(s3_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the server, as s3://bucket/registry; the readers' cache under tmp_path."""
    bucket = f"reg-{uuid.uuid4().hex[:12]}"
    request = urllib.request.Request(f"{s3_env['AWS_ENDPOINT_URL']}/{bucket}", method="PUT")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    monkeypatch.setenv("EMBEDGATE_REGISTRY_CACHE", str(tmp_path / "registry-cache"))
    return f"s3://{bucket}/registry"
