"""The real service (`bentoml serve` in a subprocess, loopback only) against every bad input of GUIDE section 5,
auth on and off, dims, encodings, the `openai` client and /metrics. Two server start-ups for the whole module."""

from __future__ import annotations

import base64
import json
import socket
import time

import httpx
import numpy as np
import pytest

from service.model.embedder import OnnxEmbedder
from service.registry.registry import Registry
from tests.service.serving import (
    TINY_DIMS,
    TINY_SERVING_DIM,
    ServerProcess,
    metric_value,
    promote,
)

pytestmark = pytest.mark.integration

API_KEY = "test-key-5b0e3c1d9a"
HEADER = "x-embedgate-model-version"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
MAX_INPUTS, MAX_CHARS, MAX_PAYLOAD = 8, 2000, 16_384
TEXTS = [
    "What is the dose for a child?",
    "the tenant pays rent",
    "heart blood pressure",
    "the tenant pays rent",
]


@pytest.fixture(scope="module")
def registry_v1(tmp_path_factory, tiny_exports) -> Registry:
    registry = Registry(tmp_path_factory.mktemp("api-registry") / "registry")
    promote(registry, tiny_exports["a"])
    return registry


@pytest.fixture(scope="module")
def reference(tiny_exports) -> OnnxEmbedder:
    return OnnxEmbedder.from_export_dir(tiny_exports["a"])


@pytest.fixture(scope="module")
def guarded(registry_v1, tmp_path_factory):
    """API key on, small limits, truncation on, every request captured for drift."""
    logs = tmp_path_factory.mktemp("guarded")
    env = {
        "EMBEDGATE_REGISTRY": str(registry_v1.root),
        "EMBEDGATE_API_KEY": API_KEY,
        "EMBEDGATE_MAX_INPUTS_PER_REQUEST": str(MAX_INPUTS),
        "EMBEDGATE_MAX_INPUT_CHARS": str(MAX_CHARS),
        "EMBEDGATE_MAX_PAYLOAD_BYTES": str(MAX_PAYLOAD),
        "EMBEDGATE_DRIFT_SAMPLE_RATE": "1.0",
        "EMBEDGATE_DRIFT_DIR": str(logs / "drift"),
    }
    with ServerProcess(env, logs / "server.log") as server:
        server.wait_for(lambda: httpx.get(f"{server.base_url}/ready").status_code == 200, what="/ready")
        yield server


@pytest.fixture(scope="module")
def strict(registry_v1, tmp_path_factory):
    """No API key, truncation off, one request in flight at a time, a 1 s timeout."""
    logs = tmp_path_factory.mktemp("strict")
    env = {
        "EMBEDGATE_REGISTRY": str(registry_v1.root),
        "EMBEDGATE_TRUNCATE": "false",
        "EMBEDGATE_MAX_CONCURRENT_REQUESTS": "1",
        "EMBEDGATE_REQUEST_TIMEOUT_S": "1",
        "EMBEDGATE_DRIFT_SAMPLE_RATE": "0",
    }
    with ServerProcess(env, logs / "server.log") as server:
        server.wait_for(lambda: httpx.get(f"{server.base_url}/ready").status_code == 200, what="/ready")
        yield server


def _post(server: ServerProcess, path: str, body, headers=None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        f"{server.base_url}{path}",
        content=content,
        timeout=30,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def _vectors(response: httpx.Response) -> np.ndarray:
    return np.array([row["embedding"] for row in response.json()["data"]], dtype=np.float32)


def _assert_error(response: httpx.Response, status: int, code: str, message_part: str = "") -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code", "param"}, body
    assert body["error"]["code"] == code, body
    assert message_part in body["error"]["message"], body
    assert "Traceback" not in response.text
    assert response.headers.get_list(HEADER) == ["v0001"]
    return body["error"]


LONG_TEXT = "the patient took the tablet " * 60  # ~300 tokens; the tiny model reads 64

BAD_INPUTS = [
    ("empty list", {"input": []}, 422, "empty_input", "the list is empty"),
    ("empty string", {"input": ""}, 422, "empty_input", "empty or whitespace only"),
    ("whitespace only", {"input": ["fine", "  \t\n "]}, 422, "empty_input", "input[1]"),
    (
        "over the batch limit",
        {"input": ["x"] * (MAX_INPUTS + 1)},
        422,
        "too_many_inputs",
        f"{MAX_INPUTS + 1} texts in one request, the limit is {MAX_INPUTS}",
    ),
    ("over the character limit", {"input": "y" * (MAX_CHARS + 1)}, 422, "input_too_long", "characters"),
    ("a number", {"input": 42}, 422, "invalid_input", "got a number (42)"),
    ("token ids", {"input": [101, 2023]}, 422, "invalid_input", "token-id input is not supported"),
    ("null", {"input": None}, 422, "invalid_input", "got null"),
    (
        "null in the list",
        {"input": ["a", None]},
        422,
        "invalid_input",
        "input[1]: expected a string, got null",
    ),
    ("nested lists", {"input": [["a", "b"]]}, 422, "invalid_input", "nested list"),
    ("missing input", {"model": "embedgate-embedder"}, 422, "missing_input", "input is required"),
    ("unknown field", {"input": "a", "dimension": 16}, 422, "unknown_field", "['dimension']"),
    ("dimensions 0", {"input": "a", "dimensions": 0}, 422, "unsupported_dimensions", "allowed: [32, 16, 8]"),
    ("dimensions -1", {"input": "a", "dimensions": -1}, 422, "unsupported_dimensions", "-1 is not one"),
    ("dimensions 7", {"input": "a", "dimensions": 7}, 422, "unsupported_dimensions", "7 is not one"),
    (
        "dimensions above the model",
        {"input": "a", "dimensions": 64},
        422,
        "unsupported_dimensions",
        "64 is not",
    ),
    (
        "dimensions as a string",
        {"input": "a", "dimensions": "16"},
        422,
        "unsupported_dimensions",
        "expected an integer",
    ),
    (
        "encoding format",
        {"input": "a", "encoding_format": "binary"},
        422,
        "invalid_encoding_format",
        "base64",
    ),
    (
        "unknown model",
        {"input": "a", "model": "text-embedding-3-large"},
        404,
        "model_not_found",
        "'text-embedding-3-large' is not served here",
    ),
    ("malformed JSON", b'{"input": ["a", }', 400, "invalid_json", "not valid JSON"),
    ("invalid UTF-8", b'{"input": "caf\xe9 au lait"}', 400, "invalid_utf8", "byte 14"),
    ("a JSON list", b'["a", "b"]', 400, "invalid_json", "expected a JSON object"),
    ("empty body", b"", 400, "empty_body", "empty"),
    (
        "over the size limit",
        {"input": ["z" * 1500] * 12},
        413,
        "payload_too_large",
        f"the limit is {MAX_PAYLOAD} bytes",
    ),
]


@pytest.mark.parametrize(
    "name, body, status, code, message", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS]
)
def test_bad_input_gets_a_clear_json_error_and_the_service_stays_up(
    guarded, name, body, status, code, message
):
    _assert_error(_post(guarded, "/v1/embeddings", body, AUTH), status, code, message)
    assert httpx.get(f"{guarded.base_url}/health").status_code == 200


def test_body_over_the_size_limit_without_content_length_is_413(guarded):
    def chunks():
        for _ in range(20):
            yield b" " * 1024  # 20 KiB of JSON whitespace, streamed (chunked: no Content-Length)

    response = httpx.post(f"{guarded.base_url}/v1/embeddings", content=chunks(), headers=AUTH, timeout=30)
    _assert_error(response, 413, "payload_too_large", "counted while streaming")


def test_native_endpoint_errors(guarded):
    _assert_error(_post(guarded, "/embed", {"inputs": []}, AUTH), 422, "empty_input")
    _assert_error(
        _post(guarded, "/embed", {"inputs": "a", "normalize": False}, AUTH), 422, "unsupported_option"
    )
    _assert_error(_post(guarded, "/embed", {"input": "a"}, AUTH), 422, "unknown_field", "accepts ['inputs'")
    _assert_error(
        _post(guarded, "/embed", {"inputs": "a", "dimensions": 7}, AUTH), 422, "unsupported_dimensions"
    )


def test_every_response_names_the_model_version_even_bentomls_own_routes(guarded):
    for path in ("/metrics", "/livez", "/readyz", "/health", "/info"):
        assert httpx.get(f"{guarded.base_url}{path}", headers=AUTH).headers.get_list(HEADER) == ["v0001"], (
            path
        )


def test_unknown_path_is_a_json_404(guarded):
    error = _assert_error(
        httpx.post(f"{guarded.base_url}/v1/embedding", headers=AUTH),
        404,
        "not_found",
        "no route POST /v1/embedding; routes: POST /v1/embeddings",
    )
    assert error["type"] == "invalid_request_error"


def test_wrong_method_is_a_json_405(guarded):
    response = httpx.get(f"{guarded.base_url}/v1/embeddings", headers=AUTH)
    error = _assert_error(response, 405, "method_not_allowed", "allowed: POST")
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "headers, code",
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer not-the-key"}, "invalid_api_key"),
        ({"Authorization": API_KEY}, "invalid_authorization_header"),  # the key without "Bearer"
        ({"Authorization": f"Basic {API_KEY}"}, "invalid_authorization_header"),
    ],
)
def test_model_routes_need_the_api_key(guarded, headers, code):
    for path, body in (("/v1/embeddings", {"input": "a"}), ("/embed", {"inputs": "a"})):
        error = _assert_error(_post(guarded, path, body, headers), 401, code)
        assert error["type"] == "authentication_error" and API_KEY not in json.dumps(error)
    response = httpx.get(f"{guarded.base_url}/v1/models", headers=headers)
    assert response.status_code == 401


def test_health_routes_stay_open_with_a_key_set(guarded):
    for path in ("/health", "/ready", "/livez", "/readyz"):
        assert httpx.get(f"{guarded.base_url}{path}").status_code == 200, path
    for path in ("/info", "/metrics"):  # behind the key (tests/service/api/test_edge_hardening.py)
        assert httpx.get(f"{guarded.base_url}{path}").status_code == 401, path
        assert httpx.get(f"{guarded.base_url}{path}", headers=AUTH).status_code == 200, path
    info = httpx.get(f"{guarded.base_url}/info", headers=AUTH).json()
    assert info["api_key_required"] is True and API_KEY not in json.dumps(info)
    assert info["model"]["version"] == "v0001" and info["model"]["dims"] == list(TINY_DIMS)
    assert info["model"]["serving_dim"] == TINY_SERVING_DIM and info["model"]["max_tokens"] == 64
    assert info["limits"]["max_inputs_per_request"] == MAX_INPUTS
    assert {row["env"] for row in info["settings"]} >= {
        "EMBEDGATE_API_KEY",
        "EMBEDGATE_MAX_PAYLOAD_BYTES",
        "EMBEDGATE_TRUNCATE",
        "EMBEDGATE_REGISTRY",
    }


@pytest.mark.parametrize("dimensions", [None, *TINY_DIMS])
def test_every_exported_dim_is_served_unit_norm_and_equal_to_the_runtime(guarded, reference, dimensions):
    body = {"input": TEXTS, "model": "embedgate-embedder"}
    if dimensions is not None:
        body["dimensions"] = dimensions
    response = _post(guarded, "/v1/embeddings", body, AUTH)
    assert response.status_code == 200, response.text
    assert response.headers.get_list(HEADER) == ["v0001"]
    payload = response.json()
    assert payload["model"] == "embedgate-embedder:v0001" and payload["object"] == "list"
    assert [row["index"] for row in payload["data"]] == list(range(len(TEXTS)))
    vectors = _vectors(response)
    expected_dim = dimensions or TINY_SERVING_DIM
    assert vectors.shape == (len(TEXTS), expected_dim)
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors, reference.embed(TEXTS, dimensions=expected_dim), atol=1e-5)
    assert payload["usage"]["prompt_tokens"] == sum(reference.count_tokens(TEXTS))
    assert payload["usage"]["total_tokens"] == payload["usage"]["prompt_tokens"]


def test_order_is_kept_and_duplicates_are_equal(guarded):
    texts = ["heart", "the lease", "heart", "a fever in a child", "the lease"]
    vectors = _vectors(_post(guarded, "/v1/embeddings", {"input": texts}, AUTH))
    np.testing.assert_array_equal(vectors[0], vectors[2])
    np.testing.assert_array_equal(vectors[1], vectors[4])
    for index, text in enumerate(texts):  # one at a time: same vector as inside the batch
        alone = _vectors(_post(guarded, "/v1/embeddings", {"input": text}, AUTH))[0]
        np.testing.assert_allclose(alone, vectors[index], atol=1e-6)


def test_base64_decodes_to_the_float_vectors(guarded):
    floats = _vectors(_post(guarded, "/v1/embeddings", {"input": TEXTS, "dimensions": 8}, AUTH))
    response = _post(
        guarded, "/v1/embeddings", {"input": TEXTS, "dimensions": 8, "encoding_format": "base64"}, AUTH
    )
    decoded = np.stack(
        [np.frombuffer(base64.b64decode(row["embedding"]), dtype="<f4") for row in response.json()["data"]]
    )
    np.testing.assert_array_equal(decoded, floats)


def test_native_endpoint_matches_the_openai_one(guarded):
    response = _post(guarded, "/embed", {"inputs": TEXTS, "dimensions": 8, "normalize": True}, AUTH)
    assert response.status_code == 200 and response.headers.get_list(HEADER) == ["v0001"]
    native = np.array(response.json(), dtype=np.float32)
    openai_style = _vectors(_post(guarded, "/v1/embeddings", {"input": TEXTS, "dimensions": 8}, AUTH))
    np.testing.assert_array_equal(native, openai_style)
    single = np.array(_post(guarded, "/embed", {"inputs": "heart"}, AUTH).json(), dtype=np.float32)
    assert single.shape == (1, TINY_SERVING_DIM)


def test_text_far_over_the_token_limit_is_truncated_when_truncation_is_on(guarded, reference):
    response = _post(guarded, "/v1/embeddings", {"input": [LONG_TEXT, "short"]}, AUTH)
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]["prompt_tokens"]
    assert usage == 64 + reference.count_tokens(["short"])[0]  # the long text counts what the model read
    np.testing.assert_allclose(
        _vectors(response)[0], reference.embed([LONG_TEXT], dimensions=16)[0], atol=1e-5
    )


def test_openai_client_works_unchanged(guarded):
    import openai

    client = openai.OpenAI(base_url=f"{guarded.base_url}/v1", api_key=API_KEY, max_retries=0)
    result = client.embeddings.create(
        model="embedgate-embedder", input=TEXTS, dimensions=8
    )  # base64 by default
    vectors = np.array([item.embedding for item in result.data], dtype=np.float32)
    np.testing.assert_array_equal(
        vectors, _vectors(_post(guarded, "/v1/embeddings", {"input": TEXTS, "dimensions": 8}, AUTH))
    )
    assert result.model == "embedgate-embedder:v0001" and result.usage.prompt_tokens > 0
    as_floats = client.embeddings.create(model="embedgate-embedder", input="heart", encoding_format="float")
    assert len(as_floats.data[0].embedding) == TINY_SERVING_DIM
    # the service name, then the alias and every servable version a client may pin (docs/versions.md)
    assert [model.id for model in client.models.list()] == ["embedgate-embedder", "champion", "v0001"]
    with pytest.raises(openai.UnprocessableEntityError, match="allowed: \\[32, 16, 8\\]"):
        client.embeddings.create(model="embedgate-embedder", input="heart", dimensions=7)
    with pytest.raises(openai.NotFoundError, match="is not served here"):
        client.embeddings.create(model="text-embedding-3-small", input="heart")
    with pytest.raises(openai.AuthenticationError, match="the API key is not valid"):
        openai.OpenAI(base_url=f"{guarded.base_url}/v1", api_key="wrong", max_retries=0).embeddings.create(
            model="embedgate-embedder", input="heart"
        )


def test_metrics_count_what_happened(guarded):
    before = httpx.get(f"{guarded.base_url}/metrics", headers=AUTH).text
    for _ in range(3):
        assert _post(guarded, "/v1/embeddings", {"input": ["a", "b"]}, AUTH).status_code == 200
    assert _post(guarded, "/embed", {"inputs": "c"}, AUTH).status_code == 200
    for dims in (0, 7):
        assert _post(guarded, "/v1/embeddings", {"input": "a", "dimensions": dims}, AUTH).status_code == 422
    assert _post(guarded, "/v1/embeddings", {"input": "a"}).status_code == 401
    after = httpx.get(f"{guarded.base_url}/metrics", headers=AUTH).text

    def delta(name, **labels):
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert delta("embedgate_requests_total", route="/v1/embeddings", status="200") == 3
    assert delta("embedgate_requests_total", route="/embed", status="200") == 1
    assert delta("embedgate_requests_total", route="/v1/embeddings", status="422") == 2
    assert delta("embedgate_errors_total", route="/v1/embeddings", code="unsupported_dimensions") == 2
    assert delta("embedgate_errors_total", route="/v1/embeddings", code="missing_api_key") == 1
    assert delta("embedgate_inputs_total", route="/v1/embeddings") == 6
    assert delta("embedgate_tokens_total", route="/embed") == 3  # [CLS] c [SEP]
    # The 401 is answered before routing (service/api/edge_guard.py), so only the 5 routed requests are timed.
    assert delta("embedgate_request_duration_seconds_count", route="/v1/embeddings") == 5
    assert delta("embedgate_batch_size_count") == 4 and delta("embedgate_batch_size_sum") == 7
    assert metric_value(after, "embedgate_model_info", version="v0001") == 1
    assert metric_value(after, "embedgate_truncated_inputs_total", route="/v1/embeddings") >= 1


def test_served_requests_reach_the_drift_capture(guarded):
    from pathlib import Path

    windows = Path(guarded.env["EMBEDGATE_DRIFT_DIR"]) / "windows"
    assert (
        _post(
            guarded, "/v1/embeddings", {"input": ["drift probe", "second probe"], "dimensions": 8}, AUTH
        ).status_code
        == 200
    )

    def captured_rows():
        rows = [
            json.loads(line) for path in windows.glob("*.jsonl*") for line in path.read_text().splitlines()
        ]
        return [row for row in rows if row["dim"] == 8]

    guarded.wait_for(lambda: windows.is_dir() and len(captured_rows()) >= 2, timeout_s=15, what="drift rows")
    assert {row["model_version"] for row in captured_rows()} == {"v0001"}


def test_the_api_key_never_reaches_the_log(guarded):
    _post(guarded, "/v1/embeddings", {"input": "a"}, {"Authorization": API_KEY})
    _post(guarded, "/v1/embeddings", {"input": "a"}, AUTH)
    time.sleep(0.5)  # access log lines are flushed asynchronously
    log = guarded.log()
    assert "/v1/embeddings" in log and API_KEY not in log


# ---- auth off, truncation off, 1 request in flight, 1 s timeout ----


def test_without_a_key_model_routes_are_open(strict):
    response = _post(strict, "/v1/embeddings", {"input": "heart"})
    assert response.status_code == 200 and response.headers.get_list(HEADER) == ["v0001"]
    assert httpx.get(f"{strict.base_url}/info").json()["api_key_required"] is False


def test_over_long_text_is_422_when_truncation_is_off(strict):
    error = _assert_error(
        _post(strict, "/v1/embeddings", {"input": ["short", LONG_TEXT]}),
        422,
        "too_many_tokens",
        "the model reads at most 64",
    )
    assert "text 1 has" in error["message"] and error["param"] == "truncate"
    assert _post(strict, "/embed", {"inputs": LONG_TEXT, "truncate": True}).status_code == 200
    _assert_error(_post(strict, "/embed", {"inputs": LONG_TEXT}), 422, "too_many_tokens")


def _hold_open(server: ServerProcess, path: str = "/v1/embeddings") -> socket.socket:
    """A request whose body never finishes arriving: it holds an in-flight slot until its timeout."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f'Content-Length: 100\r\n\r\n{{"input": '.encode()
    )
    return sock


def _read_response(sock: socket.socket, timeout_s: float) -> tuple[int, dict]:
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_more_requests_than_allowed_in_flight_get_429_then_the_slow_one_504(strict):
    slow = _hold_open(strict)
    try:
        time.sleep(0.3)  # let the server admit it
        response = _post(strict, "/v1/embeddings", {"input": "heart"})
        error = _assert_error(response, 429, "too_many_requests", "the limit is 1 (EMBEDGATE_MAX_CONCURRENT")
        assert error["type"] == "rate_limit_error" and response.headers["retry-after"] == "1"
        status, body = _read_response(slow, timeout_s=10)
        assert status == 504 and body["error"]["code"] == "timeout"
        assert "no answer within 1.0 s (EMBEDGATE_REQUEST_TIMEOUT_S)" in body["error"]["message"]
    finally:
        slow.close()
    assert _post(strict, "/v1/embeddings", {"input": "heart"}).status_code == 200  # the slot is free again
