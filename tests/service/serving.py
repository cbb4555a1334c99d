"""Helpers for the serving tests: tiny-model registries and a real `bentoml serve` process on a loopback port.

The tiny exports they serve come from the `tiny_exports` fixture in tests/conftest.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from service.registry.registry import Registry

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_DIMS = (32, 16, 8)
TINY_SERVING_DIM = 16
SERVICE = "service.app:EmbedgateService"


def promote(
    registry: Registry,
    onnx_dir: Path,
    serving_dim: int = TINY_SERVING_DIM,
    precision: str = "fp32",
    make_champion: bool = True,
    run_id: str = "test-run",
) -> str:
    return registry.add_version(
        {"onnx": onnx_dir},
        metadata={"serving_dim": serving_dim, "serve_precision": precision},
        who="tests",
        reason="serving test",
        run_id=run_id,
        make_champion=make_champion,
    )


def point_champion(registry: Registry, version: str, previous: str | None = None) -> None:
    """Move the champion pointer without the registry's checks (as a buggy or hostile writer could)."""
    path = registry.champion_path
    tmp = path.with_name(".champion.test-tmp")
    tmp.write_text(json.dumps({"version": version, "previous": previous, "updated_at": time.time()}))
    os.replace(tmp, path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`bentoml serve` (or any command that serves on `port`) in its own process group, its output in `log_path`.

    Used as a context manager: waits until /health answers, stops the process group it started on exit."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        port: int | None = None,
        argv: list[str] | None = None,
        startup_timeout_s: float = 120.0,
        cwd: Path = REPO_ROOT,
    ) -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.argv = argv or [
            sys.executable,
            "-m",
            "bentoml",
            "serve",
            SERVICE,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true", "TOKENIZERS_PARALLELISM": "false", **env}
        self.startup_timeout_s = startup_timeout_s
        self.cwd = cwd
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> ServerProcess:
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed in __exit__ with the process
        self._log = log
        self.process = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.__exit__(None, None, None)
        raise RuntimeError(
            f"server did not answer /health within {self.startup_timeout_s} s:\n{self.log()[-3000:]}"
        )

    def __exit__(self, *exc_info) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the group this object started, and only it
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, predicate, timeout_s: float = 30.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.2)
        raise AssertionError(
            f"timed out after {timeout_s} s waiting for {what}; server log tail:\n{self.log()[-3000:]}"
        )


def served_version(base_url: str) -> str | None:
    info = httpx.get(f"{base_url}/info", timeout=5).json()
    return info["model"]["version"] if info["model"] else None


def metric_value(metrics_text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0.0 when none)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
