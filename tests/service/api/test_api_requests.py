"""Request parsing, limits, API key and settings, without a server: each bad input -> its status, code, message."""

from __future__ import annotations

import asyncio
import base64
import re

import numpy as np
import pytest
from pydantic import SecretStr

from service.api.auth import check_api_key
from service.api.errors import ApiError
from service.api.limits import ConcurrencyLimit, parse_json_object, read_body
from service.api.request_bodies import (
    RequestLimits,
    check_model_name,
    parse_native_request,
    parse_openai_request,
    resolve_dimensions,
)
from service.api.response_bodies import native_body, openai_body
from service.settings import ServeSettings, SettingsError

LIMITS = RequestLimits(max_inputs=4, max_chars=50, default_truncate=True)


def _api_error(call, *args) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call(*args)
    return caught.value


@pytest.mark.parametrize(
    "body, code, message",
    [
        ({}, "missing_input", r"input is required"),
        ({"input": []}, "empty_input", r"the list is empty"),
        ({"input": ""}, "empty_input", r"input: the text is empty or whitespace only"),
        ({"input": ["ok", " \n\t"]}, "empty_input", r"input\[1\]: the text is empty or whitespace only"),
        (
            {"input": ["a"] * 5},
            "too_many_inputs",
            r"5 texts in one request, the limit is 4 "
            r"\(EMBEDGATE_MAX_INPUTS_PER_REQUEST\)",
        ),
        ({"input": 5}, "invalid_input", r"input: expected a string or a list of strings, got a number \(5\)"),
        (
            {"input": [1, 2]},
            "invalid_input",
            r"input\[0\]: expected a string, got a number \(1\); token-id input",
        ),
        ({"input": None}, "invalid_input", r"got null"),
        ({"input": ["ok", None]}, "invalid_input", r"input\[1\]: expected a string, got null"),
        ({"input": [["nested"]]}, "invalid_input", r"input\[0\]: expected a string, got a nested list"),
        ({"input": {"text": "x"}}, "invalid_input", r"got an object"),
        (
            {"input": "x" * 51},
            "input_too_long",
            r"51 characters, the limit is 50 \(EMBEDGATE_MAX_INPUT_CHARS\)",
        ),
        ({"input": "bad \ud800 text"}, "invalid_input", r"character 4 is an unpaired surrogate"),
        (
            {"input": "x", "dimensions": "16"},
            "unsupported_dimensions",
            r"expected an integer such as 128, got a "
            r"string \('16'\)",
        ),
        ({"input": "x", "dimensions": 16.0}, "unsupported_dimensions", r"got a number \(16.0\)"),
        ({"input": "x", "dimensions": True}, "unsupported_dimensions", r"got a boolean"),
        (
            {"input": "x", "encoding_format": "int8"},
            "invalid_encoding_format",
            r"encoding_format: expected one of \['float', 'base64'\], got a string \('int8'\)",
        ),
        ({"input": "x", "model": 3}, "invalid_value", r"model: expected a string"),
        ({"input": "x", "user": 3}, "invalid_value", r"user: expected a string"),
        (
            {"input": "x", "dimension": 16},
            "unknown_field",
            r"unknown field\(s\) \['dimension'\]; this endpoint "
            r"accepts \['input', 'model'",
        ),
    ],
)
def test_openai_request_errors_name_the_field_and_the_fix(body, code, message):
    error = _api_error(parse_openai_request, body, LIMITS)
    assert (error.status, error.code) == (422, code)
    assert error.body()["error"]["type"] == "invalid_request_error"
    assert re.search(message, error.message), error.message


def test_openai_request_accepts_a_string_or_a_list_and_defaults():
    parsed = parse_openai_request({"input": "one text", "model": "m", "user": "u-1"}, LIMITS)
    assert parsed.texts == ("one text",) and parsed.dimensions is None and parsed.encoding_format == "float"
    assert parsed.truncate is True and parsed.model == "m"
    parsed = parse_openai_request(
        {"input": ["a", "b", "a"], "dimensions": 8, "encoding_format": "base64"}, LIMITS
    )
    assert parsed.texts == ("a", "b", "a") and parsed.dimensions == 8 and parsed.encoding_format == "base64"


@pytest.mark.parametrize(
    "body, code, message",
    [
        (
            {"input": "x"},
            "unknown_field",
            r"unknown field\(s\) \['input'\]; this endpoint accepts \['inputs'",
        ),
        ({"inputs": "x", "normalize": False}, "unsupported_option", r"normalize: false is not supported"),
        (
            {"inputs": "x", "truncate": "yes"},
            "invalid_value",
            r"truncate: expected true or false, got a string",
        ),
        ({"inputs": []}, "empty_input", r"inputs: the list is empty"),
    ],
)
def test_native_request_errors(body, code, message):
    error = _api_error(parse_native_request, body, LIMITS)
    assert (error.status, error.code) == (422, code)
    assert re.search(message, error.message), error.message


def test_native_truncate_overrides_the_server_default():
    strict = RequestLimits(4, 50, default_truncate=False)
    assert parse_native_request({"inputs": "x"}, strict).truncate is False
    assert parse_native_request({"inputs": "x", "truncate": True}, strict).truncate is True
    assert parse_native_request({"inputs": ["x"], "normalize": True}, LIMITS).truncate is True


@pytest.mark.parametrize("requested", [0, -1, 7, 33, 4096])
def test_dimensions_outside_the_exported_ones_are_refused_with_the_allowed_list(requested):
    error = _api_error(resolve_dimensions, requested, (32, 16, 8), 16)
    assert error.status == 422 and error.param == "dimensions"
    assert (
        f"dimensions: {requested} is not one this model was trained and exported for; allowed: [32, 16, 8] "
        f"(omit it for 16)" == error.message
    )


def test_dimensions_default_to_the_serving_dim():
    assert resolve_dimensions(None, (32, 16, 8), 16) == 16
    assert resolve_dimensions(8, (32, 16, 8), 16) == 8


def test_unknown_model_name_is_404_listing_what_is_served():
    check_model_name(None, ("embedgate-embedder", "embedgate-embedder:v0001", "v0001"))
    check_model_name("v0001", ("embedgate-embedder", "embedgate-embedder:v0001", "v0001"))
    error = _api_error(check_model_name, "text-embedding-3-small", ("embedgate-embedder", "v0001"))
    assert (error.status, error.code) == (404, "model_not_found")
    assert (
        "'text-embedding-3-small' is not served here; this service serves 'embedgate-embedder'"
        in error.message
    )


@pytest.mark.parametrize(
    "raw, code, message",
    [
        (b"", "empty_body", r"the request body is empty"),
        (b"  \n", "empty_body", r"the request body is empty"),
        (
            b'{"input": ["a",]}',
            "invalid_json",
            r"not valid JSON: trailing comma is not allowed at line 1 column",
        ),
        (b"\xff\xfe{}", "invalid_utf8", r"not valid UTF-8: byte 0 is b'\\xff'"),
        (b'{"input": "caf\xe9"}', "invalid_utf8", r"byte 14"),
        (b'["a", "b"]', "invalid_json", r"expected a JSON object at the top level, got a list"),
        (b"null", "invalid_json", r"got null"),
        (b"[" * 5000 + b"]" * 5000, "invalid_json", r"depth limit exceeded"),
        (b'{"input": NaN}', "invalid_json", r"not valid JSON"),
    ],
)
def test_unreadable_bodies_are_400(raw, code, message):
    error = _api_error(parse_json_object, raw)
    assert (error.status, error.code) == (400, code)
    assert re.search(message, error.message), error.message


class _FakeRequest:
    def __init__(self, chunks: list[bytes], content_length: str | None) -> None:
        self._chunks = chunks
        self.headers = {} if content_length is None else {"content-length": content_length}
        self.read_chunks = 0

    async def stream(self):
        for chunk in self._chunks:
            self.read_chunks += 1
            yield chunk


def test_body_over_the_limit_is_413_before_reading_when_declared():
    request = _FakeRequest([b"x" * 10], content_length="5000")
    with pytest.raises(ApiError) as caught:
        asyncio.run(read_body(request, max_bytes=1000))
    assert (caught.value.status, caught.value.code) == (413, "payload_too_large")
    assert "5000 bytes, the limit is 1000 bytes (EMBEDGATE_MAX_PAYLOAD_BYTES)" in caught.value.message
    assert request.read_chunks == 0  # refused from the header alone


def test_body_over_the_limit_is_413_while_streaming_when_undeclared_or_lying():
    for declared in (None, "10"):
        request = _FakeRequest([b"x" * 400] * 10, content_length=declared)
        with pytest.raises(ApiError, match=r"over 1000 bytes \(counted while streaming\)") as caught:
            asyncio.run(read_body(request, max_bytes=1000))
        assert caught.value.status == 413 and request.read_chunks == 3  # stopped as soon as it was over


def test_body_within_the_limit_is_returned_and_a_bad_content_length_is_400():
    assert asyncio.run(read_body(_FakeRequest([b"ab", b"cd"], "4"), max_bytes=4)) == b"abcd"
    with pytest.raises(ApiError, match=r"Content-Length '-1' is not a byte count") as caught:
        asyncio.run(read_body(_FakeRequest([], "-1"), max_bytes=4))
    assert caught.value.status == 400


def test_concurrency_limit_answers_429_and_frees_its_slot():
    limit = ConcurrencyLimit(1)
    with limit.admit():
        with pytest.raises(ApiError, match=r"1 requests are already in flight, the limit is 1") as caught:
            with limit.admit():
                pass
        assert caught.value.status == 429 and caught.value.headers == {"Retry-After": "1"}
    with limit.admit():  # released on exit
        assert limit.in_flight == 1
    assert limit.in_flight == 0


@pytest.mark.parametrize(
    "header, code",
    [
        (None, "missing_api_key"),
        ("", "missing_api_key"),
        ("Bearer wrong-key", "invalid_api_key"),
        ("Bearer s3cret-key-extra", "invalid_api_key"),
        ("Basic czNjcmV0", "invalid_authorization_header"),
        ("s3cret-key", "invalid_authorization_header"),
        ("Bearer ", "invalid_authorization_header"),
    ],
)
def test_api_key_errors_never_echo_the_header(header, code):
    error = _api_error(check_api_key, header, SecretStr("s3cret-key"))
    assert (error.status, error.code) == (401, code)
    assert error.headers["WWW-Authenticate"].startswith("Bearer")
    assert "s3cret" not in error.message and "wrong-key" not in error.message and "czNj" not in error.message


def test_api_key_accepted_and_optional():
    check_api_key("Bearer s3cret-key", SecretStr("s3cret-key"))
    check_api_key("bearer  s3cret-key ", SecretStr("s3cret-key"))
    check_api_key(None, None)  # no key configured: open


def test_responses_float_and_base64_carry_the_same_float32_values():
    vectors = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    import orjson

    floats = orjson.loads(openai_body(vectors, 12, "m:v1", "float"))
    encoded = orjson.loads(openai_body(vectors, 12, "m:v1", "base64"))
    assert floats["usage"] == {"prompt_tokens": 12, "total_tokens": 12} and floats["model"] == "m:v1"
    assert [row["index"] for row in floats["data"]] == [0, 1, 2]
    assert np.array_equal(np.array([row["embedding"] for row in floats["data"]], dtype=np.float32), vectors)
    decoded = np.stack(
        [np.frombuffer(base64.b64decode(row["embedding"]), dtype="<f4") for row in encoded["data"]]
    )
    assert np.array_equal(decoded, vectors)
    assert np.array_equal(np.array(orjson.loads(native_body(vectors)), dtype=np.float32), vectors)


def test_settings_from_env_with_defaults_and_types():
    settings = ServeSettings.from_env(
        {
            "EMBEDGATE_MAX_INPUTS_PER_REQUEST": "64",
            "EMBEDGATE_TRUNCATE": "false",
            "EMBEDGATE_API_KEY": "k",
            "EMBEDGATE_THREADS": " ",
            "OTHER": "x",
        }
    )
    assert settings.max_inputs_per_request == 64 and settings.truncate is False
    assert settings.threads is None and settings.api_key.get_secret_value() == "k"
    assert settings.max_payload_bytes == 2_000_000 and settings.request_timeout_s == 30.0
    described = {row["env"]: row for row in settings.describe()}
    assert described["EMBEDGATE_API_KEY"]["value"] == "(set)"  # never the key
    assert described["EMBEDGATE_MAX_INPUTS_PER_REQUEST"]["value"] == 64
    assert list(described.values()), "nothing to check: described.values() is empty"
    assert all(row["description"] for row in described.values())


@pytest.mark.parametrize(
    "env, message",
    [
        (
            {"EMBEDGATE_MAX_INPUTS_PER_REQUEST": "0"},
            r"EMBEDGATE_MAX_INPUTS_PER_REQUEST='0': Input should be greater "
            r"than or equal to 1",
        ),
        (
            {"EMBEDGATE_PRECISION": "bf16"},
            r"EMBEDGATE_PRECISION='bf16': Input should be 'fp32', 'int8' or 'fp16'",
        ),
        ({"EMBEDGATE_TRUNCATE": "maybe"}, r"EMBEDGATE_TRUNCATE='maybe': Input should be a valid boolean"),
        ({"EMBEDGATE_REQUEST_TIMEOUT_S": "7200"}, r"EMBEDGATE_REQUEST_TIMEOUT_S='7200'"),
    ],
)
def test_bad_settings_name_the_variable_and_the_value(env, message):
    with pytest.raises(SettingsError, match=message):
        ServeSettings.from_env(env)


def test_docs_list_every_setting():
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[3] / "docs" / "serving.md").read_text()
    missing = [row["env"] for row in ServeSettings().describe() if f"`{row['env']}`" not in docs]
    assert missing == [], f"docs/serving.md does not document {missing}"


def test_tokens_per_request_are_capped_after_truncation():
    from service.api.limits import check_request_tokens

    assert check_request_tokens((10, 500, 20), max_seq_length=256, limit=286) == 286  # 500 is cut to 256
    error = _api_error(check_request_tokens, (10, 500, 21), 256, 286)
    assert (error.status, error.code, error.param) == (422, "too_many_request_tokens", "input")
    assert re.search(
        r"287 tokens after truncation \(over 3 texts\), the limit is 286 per request "
        r"\(EMBEDGATE_MAX_REQUEST_TOKENS\); split it",
        error.message,
    )
