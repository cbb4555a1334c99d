"""Connection-level limits with real sockets against a real server: slow headers, oversize headers, idle
connections, a connection cap and malformed HTTP are all answered in JSON and closed within their timeouts."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from service.registry.registry import Registry
from tests.service.serving import (
    ServerProcess,
    promote,
)

pytestmark = pytest.mark.integration

MAX_HEADER_BYTES, HEADER_TIMEOUT_S, KEEP_ALIVE_S, MAX_CONNECTIONS = 4096, 2.0, 3.0, 6
MARGIN_S = 3.0  # scheduling slack on a busy 2-core machine


@pytest.fixture(scope="module")
def limited(tmp_path_factory, tiny_exports):
    root = tmp_path_factory.mktemp("limits")
    registry = Registry(root / "registry")
    promote(registry, tiny_exports["a"])
    env = {
        "EMBEDGATE_REGISTRY": str(registry.root),
        "EMBEDGATE_DRIFT_SAMPLE_RATE": "0",
        "EMBEDGATE_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
        "EMBEDGATE_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "EMBEDGATE_KEEP_ALIVE_TIMEOUT_S": str(KEEP_ALIVE_S),
        "EMBEDGATE_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    }
    with ServerProcess(env, root / "server.log") as server:
        server.wait_for(lambda: httpx.get(f"{server.base_url}/ready").status_code == 200, what="/ready")
        yield server


def _connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=KEEP_ALIVE_S + HEADER_TIMEOUT_S + 10)


def _read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    sock.close()
    return data


def _read_one_response(sock: socket.socket) -> bytes:
    """One whole response (headers, then Content-Length bytes of body): the server may send them in separate
    packets, so a single recv can return the headers alone."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before the response headers ended: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed mid-body: {data!r}"
        body += chunk
    return head + b"\r\n\r\n" + body


def _json_error(raw: bytes, status: int, code: str) -> dict:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), raw[:300]
    assert b"content-type: application/json" in head.lower()
    error = json.loads(body)["error"]
    assert error["code"] == code, error
    return error


def test_a_client_sending_headers_slowly_is_cut_off_within_the_header_timeout(limited):
    sock = _connect(limited)
    started = time.monotonic()
    sock.sendall(b"GET /health HTTP/1.1\r\n")
    try:
        for _ in range(int((HEADER_TIMEOUT_S + MARGIN_S) / 0.25) + 4):  # one header byte every 0.25 s
            sock.sendall(b"X")
            time.sleep(0.25)
    except (BrokenPipeError, ConnectionResetError):
        pass
    raw = _read_until_closed(sock)
    elapsed = time.monotonic() - started
    assert elapsed < HEADER_TIMEOUT_S + MARGIN_S + 1, elapsed
    _json_error(raw, 408, "request_timeout")


@pytest.mark.parametrize("size", [64 * 1024, 8 * 1024 * 1024])
def test_an_oversize_header_is_refused_with_431_and_closed(limited, size):
    sock = _connect(limited)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
    sent = 0
    try:
        while sent < size:
            sock.sendall(b"a" * 16384)
            sent += 16384
        sock.sendall(b"\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server closed the connection mid-header, as it should
    _json_error(_read_until_closed(sock), 431, "request_header_too_large")
    assert sent < size or size <= 64 * 1024  # an 8 MiB header is refused before it is all sent
    assert httpx.get(f"{limited.base_url}/health").status_code == 200


def test_headers_under_the_limit_are_served(limited):
    response = httpx.get(f"{limited.base_url}/health", headers={"X-Fill": "a" * (MAX_HEADER_BYTES // 2)})
    assert response.status_code == 200


@pytest.mark.parametrize("after_a_request", [False, True])
def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(limited, after_a_request):
    sock = _connect(limited)
    started = time.monotonic()
    if after_a_request:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_one_response(sock).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
    assert _read_until_closed(sock) == b""
    elapsed = time.monotonic() - started
    assert KEEP_ALIVE_S - 0.5 < elapsed < KEEP_ALIVE_S + MARGIN_S, elapsed


def test_connections_over_the_cap_get_503_and_are_closed(limited):
    held = [_connect(limited) for _ in range(MAX_CONNECTIONS)]
    try:
        extra = _connect(limited)
        _json_error(_read_until_closed(extra), 503, "too_many_connections")
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    assert httpx.get(f"{limited.base_url}/health").status_code == 200  # room again once they are closed


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    ],
)
def test_malformed_http_gets_a_json_400(limited, request_bytes):
    sock = _connect(limited)
    sock.sendall(request_bytes)
    _json_error(_read_until_closed(sock), 400, "malformed_http")


def test_keep_alive_requests_still_work(limited):
    with httpx.Client(base_url=limited.base_url) as client:
        for _ in range(5):
            response = client.post("/v1/embeddings", json={"input": "heart"})
            assert response.status_code == 200, response.text
        response = client.request("BREW", "/v1/embeddings")  # a method token HTTP allows but nobody serves
        assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"
