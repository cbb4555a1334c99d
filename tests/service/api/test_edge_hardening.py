"""What a hostile client can do at the HTTP edge: a random-path flood must not grow /metrics, a keyless client
reaches nothing but the probes, no answer carries a server path, and every error is JSON, whatever layer answers.

One real server (`bentoml serve`, loopback) with an API key; the path redaction is also checked without a server.
"""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from service.api.redact import hide_paths
from service.registry.registry import Registry
from tests.service.serving import (
    ServerProcess,
    metric_value,
    promote,
)

API_KEY = "edge-key-8d1f"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, tiny_exports):
    root = tmp_path_factory.mktemp("edge")
    registry = Registry(root / "registry")
    promote(registry, tiny_exports["a"])
    env = {
        "EMBEDGATE_REGISTRY": str(registry.root),
        "EMBEDGATE_API_KEY": API_KEY,
        "EMBEDGATE_DRIFT_SAMPLE_RATE": "0",
    }
    with ServerProcess(env, root / "server.log") as server:
        server.wait_for(lambda: httpx.get(f"{server.base_url}/ready").status_code == 200, what="/ready")
        yield server


def _series(metrics_text: str) -> int:
    return sum(1 for line in metrics_text.splitlines() if line and not line.startswith("#"))


def _assert_json_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    if code is not None:
        assert error["code"] == code, error
    return error


@pytest.mark.integration
def test_a_random_path_flood_adds_no_metrics_series(keyed):
    def scrape() -> str:
        response = httpx.get(f"{keyed.base_url}/metrics", headers=AUTH)
        assert response.status_code == 200
        return response.text

    with httpx.Client(base_url=keyed.base_url, timeout=10) as client:
        for headers in ({}, AUTH):  # one of each first, so every label value the flood can use exists
            client.get(f"/{uuid.uuid4().hex}", headers=headers)
        before = scrape()
        for index in range(400):
            headers = AUTH if index % 2 else {}
            client.request("GET" if index % 3 else "POST", f"/{uuid.uuid4().hex}/{index}", headers=headers)
    after = scrape()
    assert _series(after) == _series(before), "a new path made a new series"
    assert len(after) < len(before) + 2048  # only counter values grew, not label sets
    assert "unmatched" in after and all(len(line) < 400 for line in after.splitlines())
    unmatched = metric_value(after, "embedgate_errors_total", route="unmatched", code="not_found")
    unauthorised = metric_value(after, "embedgate_errors_total", route="unmatched", code="missing_api_key")
    assert unmatched >= 200 and unauthorised >= 200


@pytest.mark.integration
@pytest.mark.parametrize("path", ["/metrics", "/info", "/v1/models", "/schema.json", "/docs", "/", "/nope"])
def test_without_the_key_nothing_but_the_probes_answers(keyed, path):
    error = _assert_json_error(httpx.get(f"{keyed.base_url}{path}"), 401, "missing_api_key")
    assert error["type"] == "authentication_error"


@pytest.mark.integration
def test_the_probes_stay_open(keyed):
    for path in ("/health", "/ready", "/livez", "/readyz"):
        assert httpx.get(f"{keyed.base_url}{path}").status_code == 200, path


@pytest.mark.integration
@pytest.mark.parametrize(
    "method, path, status",
    [
        ("TRACE", "/v1/embeddings", 405),  # a method no route of ours knows
        ("DELETE", "/embed", 405),
        ("POST", "/livez", 405),  # BentoML's own route: its plain-text 405 becomes ours
        ("GET", "/v1/embeddings/extra", 404),
    ],
)
def test_bad_methods_and_paths_get_json_errors(keyed, method, path, status):
    _assert_json_error(httpx.request(method, f"{keyed.base_url}{path}", headers=AUTH), status)


@pytest.mark.integration
def test_info_carries_no_server_path(keyed):
    response = httpx.get(f"{keyed.base_url}/info", headers=AUTH)
    assert response.status_code == 200
    text = response.text
    registry_root = keyed.env["EMBEDGATE_REGISTRY"]
    assert registry_root not in text and "/tmp" not in text and "/home" not in text, text
    info = json.loads(text)
    assert info["model"]["version"] == "v0001" and info["api_key_required"] is True


def test_a_not_ready_answer_names_no_server_path(tmp_path):
    """In process: a registry without a champion; /ready and a model route say why, with the folder cut."""
    from prometheus_client import CollectorRegistry
    from starlette.testclient import TestClient

    from service.api.metrics import ServiceMetrics
    from service.api.routes import create_http_app
    from service.runtime import ServingRuntime
    from service.settings import ServeSettings

    settings = ServeSettings(registry=tmp_path / "deep" / "registry")
    runtime = ServingRuntime.create(
        settings, ServiceMetrics(CollectorRegistry()), drift=None, registry_chosen=True
    )
    assert str(tmp_path) in runtime.holder.not_ready_reason  # the operator's log keeps the full path
    client = TestClient(create_http_app(lambda: runtime))
    for response in (
        client.get("/ready"),
        client.post("/v1/embeddings", json={"input": "a"}),
        client.get("/info"),
    ):
        assert str(tmp_path) not in response.text and "/deep/" not in response.text, response.text
    assert "no champion in the registry .../registry yet" in client.get("/ready").json()["error"]["message"]


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "/srv/models/registry/versions/v0004/onnx/model.onnx: sha256 does not match",
            ".../model.onnx: sha256 does not match",
        ),
        ("registry:/home/ops/registry", "registry:.../registry"),
        ("refused (/tmp/a/b.json)", "refused (.../b.json)"),
        ("see http://host/x/y and ./rel/path and a/b", "see http://host/x/y and ./rel/path and a/b"),
    ],
)
def test_hide_paths_cuts_absolute_paths_to_their_last_component(text, expected):
    assert hide_paths(text) == expected


def test_json_errors_rewrites_plain_text_errors_and_catches_failures():
    """The middleware alone, around a plain Starlette app: its plain-text 405 and an exception both become JSON."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from service.api.edge_guard import JsonErrors

    async def fine(request):
        return PlainTextResponse("ok")

    async def broken(request):
        raise RuntimeError("/srv/secret/path exploded")

    app = JsonErrors(Starlette(routes=[Route("/fine", fine), Route("/broken", broken)]))
    client = TestClient(app, raise_server_exceptions=False)
    assert client.get("/fine").text == "ok"  # successes pass untouched
    error = _assert_json_error(client.post("/fine"), 405, "method_not_allowed")
    assert error["message"].startswith("POST /fine: 405 Method Not Allowed")
    error = _assert_json_error(client.get("/broken"), 500, "internal_error")
    assert "/srv/secret" not in error["message"]
