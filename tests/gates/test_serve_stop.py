"""`embedgate serve` stops all of what it started: SIGTERM or SIGINT drains a request in flight (it completes),
then no server process is left and the port is free; SIGKILL of `embedgate serve` itself takes the server down.

Real processes: `embedgate serve` on a loopback port over a registry with the tiny model.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time

import httpx
import psutil
import pytest

from service.registry.registry import Registry
from tests.service.serving import (
    ServerProcess,
    free_port,
    promote,
)

pytestmark = pytest.mark.integration


def _serve(tmp_path, tiny_exports, drain_s: int = 20) -> ServerProcess:
    registry = Registry(tmp_path / "registry")
    promote(registry, tiny_exports["a"])
    port = free_port()
    argv = [sys.executable, "-m", "gates.cli", "serve", "--registry", str(registry.root), "--port", str(port)]
    env = {"EMBEDGATE_DRAIN_TIMEOUT_S": str(drain_s), "EMBEDGATE_DRIFT_SAMPLE_RATE": "0"}
    return ServerProcess(env, tmp_path / "server.log", port=port, argv=argv)


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _gone(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """The processes still alive (zombies count as gone) after waiting up to `timeout_s`."""
    _, alive = psutil.wait_procs(processes, timeout=timeout_s)
    return [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _start_slow_request(port: int) -> tuple[socket.socket, bytes]:
    """An embed request whose headers and first half of the body are sent: in flight, waiting for the rest."""
    body = json.dumps({"input": ["the tenant pays rent", "heart blood pressure"]}).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:10]
    )
    return sock, body[10:]


def _finish_and_read(sock: socket.socket, rest: bytes) -> bytes:
    sock.sendall(rest)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
        if b"\r\n\r\n" in answer and answer.split(b"\r\n\r\n", 1)[1].rstrip().endswith(b"}"):
            break
    sock.close()
    return answer


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_drains_the_request_in_flight_then_leaves_nothing(tmp_path, tiny_exports, sig):
    with _serve(tmp_path, tiny_exports) as server:
        server.wait_for(lambda: httpx.get(f"{server.base_url}/ready").status_code == 200, what="/ready")
        tree = _descendants(server.process.pid)
        assert len(tree) >= 2, tree  # the bentoml arbiter and its worker
        in_flight, rest = _start_slow_request(server.port)
        time.sleep(0.5)  # the worker has the request's headers: it is in flight
        os.kill(server.process.pid, sig)  # the `embedgate serve` process only, as a shell or systemd would
        time.sleep(1.0)  # the drain has begun: the listener is closed, the request is still open
        answer = _finish_and_read(in_flight, rest)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
        assert b'"embedding"' in answer
        assert server.process.wait(timeout=60) == 0, server.log()[-2000:]
        left = _gone(tree, timeout_s=15)
        assert not left, f"left behind: {[(p.pid, p.cmdline()) for p in left]}"
        assert _port_free(server.port)


def test_killing_embedgate_serve_takes_the_server_down_with_it(tmp_path, tiny_exports):
    with _serve(tmp_path, tiny_exports) as server:
        server.wait_for(lambda: httpx.get(f"{server.base_url}/ready").status_code == 200, what="/ready")
        tree = _descendants(server.process.pid)
        os.kill(server.process.pid, signal.SIGKILL)  # cannot be caught: only the kernel can tell the children
        server.process.wait(timeout=10)
        left = _gone(tree, timeout_s=40)
        assert not left, f"left behind: {[(p.pid, p.cmdline()) for p in left]}"
        assert _port_free(server.port)
