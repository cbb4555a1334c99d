"""Request limits applied before any model work: body size (413), JSON readability (400), requests in flight (429),
tokens per request (422).

The body is never read whole before it is measured: a declared Content-Length over the limit is refused at once,
and a chunked or lying body is counted while it streams in, so a client cannot make the server buffer more than
`max_bytes` (BentoML and Starlette set no limit of their own).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from service.api.errors import ApiError

EXAMPLE_BODY = '{"input": ["first text", "second text"]}'


async def read_body(request: Any, max_bytes: int) -> bytes:
    """The request body (a starlette Request), or ApiError(413) as soon as it is known to exceed `max_bytes`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(
                400,
                "invalid_content_length",
                f"Content-Length {declared[:40]!r} is not a byte count; let your HTTP client set it",
            )
        if int(declared) > max_bytes:
            raise _too_large(f"{int(declared)} bytes", max_bytes)
    from starlette.requests import ClientDisconnect

    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise _too_large(f"over {max_bytes} bytes (counted while streaming)", max_bytes)
            chunks.append(chunk)
    except ClientDisconnect:  # nobody will read the answer; counted, not logged as a server failure
        raise ApiError(
            400, "client_disconnected", f"the client closed the connection after {size} bytes of the body"
        ) from None
    return b"".join(chunks)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or ApiError(400) saying what is wrong with it."""
    import orjson

    if not raw.strip():
        raise ApiError(
            400, "empty_body", f"the request body is empty; send a JSON object such as {EXAMPLE_BODY}"
        )
    try:
        raw.decode("utf-8")  # orjson checks this too, but its message would not say which byte
    except UnicodeDecodeError as err:
        raise ApiError(
            400,
            "invalid_utf8",
            f"the body is not valid UTF-8: byte {err.start} is "
            f"{raw[err.start : err.start + 1]!r}; encode the JSON as UTF-8",
        ) from None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise ApiError(
            400,
            "invalid_json",
            f"the body is not valid JSON: {err.msg} at line {err.lineno} column "
            f"{err.colno}; send a JSON object such as {EXAMPLE_BODY} "
            f"(Content-Type: application/json)",
        ) from None
    if not isinstance(value, dict):
        kind = {
            list: "a list",
            str: "a string",
            int: "a number",
            float: "a number",
            bool: "a boolean",
            type(None): "null",
        }.get(type(value), type(value).__name__)
        raise ApiError(
            400,
            "invalid_json",
            f"expected a JSON object at the top level, got {kind}; send an object such as {EXAMPLE_BODY}",
        )
    return value


def check_request_tokens(counts: tuple[int, ...], max_seq_length: int, limit: int) -> int:
    """The tokens the model will read for one request (each text cut to `max_seq_length`), or ApiError(422) when
    they are over `limit`. This bounds what one request can make the batcher pad, run and hold, whatever the batch
    size: memory per request follows tokens, not texts."""
    read = sum(min(count, max_seq_length) for count in counts)
    if read > limit:
        raise ApiError(
            422,
            "too_many_request_tokens",
            f"this request holds {read} tokens after truncation (over "
            f"{len(counts)} texts), the limit is {limit} per request (EMBEDGATE_MAX_REQUEST_TOKENS); "
            f"split it into several requests",
            param="input",
        )
    return read


class ConcurrencyLimit:
    """Counts model requests in flight in this worker process; one more than `limit` gets 429 at once, so an
    overloaded server sheds load instead of queueing requests that would time out anyway."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        if self.in_flight >= self.limit:
            raise ApiError(
                429,
                "too_many_requests",
                f"{self.in_flight} requests are already in flight, the limit "
                f"is {self.limit} (EMBEDGATE_MAX_CONCURRENT_REQUESTS); retry shortly, with backoff",
                headers={"Retry-After": "1"},
            )
        self.in_flight += 1  # the event loop is single-threaded: no lock needed
        try:
            yield
        finally:
            self.in_flight -= 1


def _too_large(size: str, max_bytes: int) -> ApiError:
    return ApiError(
        413,
        "payload_too_large",
        f"the request body is {size}, the limit is {max_bytes} bytes "
        f"(EMBEDGATE_MAX_PAYLOAD_BYTES); send fewer or shorter texts per request",
    )
