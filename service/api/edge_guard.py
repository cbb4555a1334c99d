"""ASGI middleware in front of every route (ours and BentoML's): API key first, then a JSON body for any error.

    EmbedgateService.add_asgi_middleware(JsonErrors)
    EmbedgateService.add_asgi_middleware(ApiKeyGate, get_runtime=..., known_routes=...)

Why a middleware and not a check inside each route: a check inside the route runs after routing, so a client
without the key could still reach BentoML's own routes (/schema.json, /docs) and make every unknown path a new
metrics series (found by a random-path flood: 234,840 series, /metrics 45 MB). Here the key is checked before
anything is routed, for every path except the probes (`OPEN_PATHS`). Metrics labels come from the route table
only: an unknown path is counted as `unmatched`, so no request, with or without the key, can add a label value.

`JsonErrors` rewrites the plain-text error pages that Starlette and BentoML answer by themselves (a method no route
accepts, BentoML's timeout, an exception before our handlers) into our `{"error": {...}}` shape, so a client sees
one error format whatever layer answered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from service.api.auth import check_api_key
from service.api.errors import ApiError
from service.api.redact import hide_paths
from service.api.response_bodies import dumps

logger = logging.getLogger("embedgate.service")
# Liveness/readiness probes stay open so an orchestrator needs no secret; /livez and /readyz are BentoML's aliases.
OPEN_PATHS = frozenset({"/health", "/ready", "/livez", "/readyz"})
UNMATCHED = "unmatched"  # the one label every path outside the route table shares

_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    429: "too_many_requests",
    500: "internal_error",
    503: "service_unavailable",
    504: "timeout",
}


def route_label(path: str, known_routes: frozenset[str]) -> str:
    """The metrics label for a request path: the path itself when it is in the route table, else `unmatched`."""
    return path if path in known_routes else UNMATCHED


class ApiKeyGate:
    """401 (JSON) for any request without the configured key, before routing; probes excepted."""

    def __init__(self, app: Any, get_runtime: Callable[[], Any], known_routes: Iterable[str]) -> None:
        self.app = app
        self.get_runtime = get_runtime
        self.known_routes = frozenset(known_routes)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        runtime = self.get_runtime()
        if runtime is None:  # still starting: the key is not known yet, so nothing but the probes is answered
            await send_error(send, ApiError(503, "model_not_ready", "the service is starting; retry shortly"))
            return
        # Only the one header is decoded (every request passes here).
        authorization = next(
            (value.decode("latin-1") for name, value in scope["headers"] if name.lower() == b"authorization"),
            None,
        )
        try:
            check_api_key(authorization, runtime.settings.api_key)
        except ApiError as err:
            route = route_label(scope["path"], self.known_routes)
            runtime.metrics.errors.labels(route, err.code).inc()
            runtime.metrics.requests.labels(route, str(err.status)).inc()
            await send_error(send, err)
            return
        await self.app(scope, receive, send)


class JsonErrors:
    """Turn any non-JSON error response from an inner layer into our JSON error shape (same status)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = {"rewrite": None, "body": b"", "started": False}

        async def send_json_errors(message: dict) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
                # Headers are decoded only for an error: a 200 passes through untouched (the hot path).
                if message["status"] >= 400 and not dict(_decoded_headers(message)).get(
                    "content-type", ""
                ).startswith("application/json"):
                    state["rewrite"] = message  # hold the start until the body is known
                    return
            elif message["type"] == "http.response.body" and state["rewrite"] is not None:
                state["body"] += message.get("body", b"")
                if message.get("more_body"):
                    return
                await _send_rewritten(send, state["rewrite"], state["body"], scope)
                return
            await send(message)

        try:
            await self.app(scope, receive, send_json_errors)
        except (
            Exception
        ):  # a bug below us: log it, answer JSON (Starlette's outer handler would send plain text)
            if state["started"]:
                raise
            logger.exception("%s %s failed", scope.get("method"), scope.get("path"))
            await send_error(
                send,
                ApiError(
                    500, "internal_error", "the server failed to answer this request; the error is in its log"
                ),
            )


async def _send_rewritten(send: Callable, start: dict, body: bytes, scope: dict) -> None:
    status = start["status"]
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    said = hide_paths(body.decode("utf-8", "replace").strip())[:200]
    message = f"{scope.get('method', '')} {scope.get('path', '')}: {status} {phrase}"
    if said and said.lower() != phrase.lower():
        message += f" ({said})"
    error = ApiError(status, _ERROR_CODES.get(status, "http_error"), message)
    kept = [
        (name, value)
        for name, value in start.get("headers", ())
        if name.lower() not in (b"content-type", b"content-length")
    ]
    await send_error(send, error, kept)


async def send_error(send: Callable, error: ApiError, extra_headers: list | None = None) -> None:
    """Answer `error` as a complete JSON response on a raw ASGI `send`."""
    body = dumps(error.body())
    headers = list(extra_headers or [])
    headers += [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in error.headers.items()
    ]
    headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _decoded_headers(holder: dict) -> Iterable[tuple[str, str]]:
    for name, value in holder.get("headers", ()):
        yield name.decode("latin-1").lower(), value.decode("latin-1")
