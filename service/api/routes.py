"""The HTTP API, a Starlette app that the BentoML service mounts at "/" (BentoML keeps /metrics, /livez, /readyz).

    GET  /health          200 while the process runs (liveness)
    GET  /ready           200 once a model has loaded and passed its warm-up embed, else 503 saying why
    GET  /info            served version, dims, max tokens, limits and every EMBEDGATE_* setting
    GET  /metrics         Prometheus text (ours; BentoML's path-labelled HTTP metrics are off)
    GET  /v1/models       OpenAI's model list: the service name, the aliases, every servable version (and, for a
                          loaded prompted model, its role names `v0003:query` / `v0003:document`)
    POST /v1/embeddings   OpenAI embeddings: {"input", "model", "dimensions", "encoding_format", "input_type"};
                          `"model": "<name>:query"` picks the query prompt for clients that send no input_type
    POST /embed           text-embeddings-inference: {"inputs", "dimensions", "normalize", "truncate", "input_type",
                          "prompt_name"} -> [[...]]
    anything else         404, in the same JSON error shape

Before any route, service/api/edge_guard.py checks the API key (401) for every path but the probes. A model request
then goes: in-flight limit (429) -> a model is loaded (503) -> body size (413) ->
JSON object (400) -> field values (422; unknown model 404) -> token limit when truncation is off (422) -> batched
embed, all within the request timeout (504). It takes the served model once, at its start, and answers with that
model's vectors and its version in the `x-embedgate-model-version` header, even if a hot swap happens meanwhile.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.api.errors import ApiError
from service.api.limits import check_request_tokens, parse_json_object, read_body
from service.api.prompt_fields import prompt_for
from service.api.redact import hide_paths, hide_paths_in
from service.api.request_bodies import (
    EmbeddingRequest,
    RequestLimits,
    check_model_name,
    parse_native_request,
    parse_openai_request,
    resolve_dimensions,
)
from service.api.response_bodies import dumps, native_body, openai_body
from service.model.memory import TRIM_AFTER_CHARS, release_freed_memory
from service.model.prompts import apply_prompt, role_rows
from service.split.halves import ModelServiceError
from service.versions.version_header import NO_MODEL, VERSION_HEADER
from service.versions.version_pool import VersionNotFound, VersionUnavailable, list_versions

if TYPE_CHECKING:
    import numpy as np

    from service.model.serving_model import ServingModel
    from service.model.tokenization import TokenizedTexts
    from service.runtime import ServingRuntime

logger = logging.getLogger("embedgate.service")

# The routes that run the model: the hot path, left out of BentoML's request tracing by default (service/app.py).
EMBEDDING_PATHS = ("/v1/embeddings", "/embed")

# Up to this many characters a request is tokenised in the model's thread, batched with the others (a few ms at
# most); a longer one on a thread of its own, so that it never holds up the model.
INLINE_TOKENIZE_CHARS = 4096


@dataclass(frozen=True)
class Embedded:
    vectors: np.ndarray  # [texts, dimensions], unit length
    dimensions: int
    token_counts: tuple[int, ...]  # before truncation
    truncated: tuple[bool, ...]
    processed_tokens: int  # what the model read: after truncation, special tokens included


def create_http_app(get_runtime: Callable[[], ServingRuntime]) -> Starlette:
    api = EmbeddingApi(get_runtime)
    routes = [
        Route("/health", api.health, methods=["GET"]),
        Route("/ready", api.ready, methods=["GET"]),
        Route("/info", api.info, methods=["GET"]),
        Route("/v1/models", api.list_models, methods=["GET"]),
        Route("/v1/embeddings", api.openai_embeddings, methods=["POST"]),
        Route("/embed", api.native_embed, methods=["POST"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        # Last: any other path or method gets a JSON 404/405 naming the routes (BentoML's own routes are matched
        # before ours). An ASGI endpoint, because Starlette limits a function endpoint without methods to GET; this
        # one takes every method, also ones no route knows (TRACE, made-up ones).
        Route("/{path:path}", _AnyMethod(api.not_found)),
    ]
    api.methods = {route.path: route.methods - {"HEAD"} for route in routes[:-1]}
    # BentoML's probes: another method there reaches our catch-all (a full match beats their partial one).
    api.methods.update({"/livez": {"GET"}, "/readyz": {"GET"}})
    return Starlette(routes=routes)


class _AnyMethod:
    """A request handler as a raw ASGI app, so a Route matches it for every HTTP method."""

    def __init__(self, handler: Callable[[Request], Awaitable[Response]]) -> None:
        self.handler = handler

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        response = await self.handler(Request(scope, receive))
        await response(scope, receive, send)


def known_routes(app: Starlette) -> frozenset[str]:
    """Every fixed path the service answers (ours and BentoML's probes): the only values a metrics label takes."""
    return frozenset({route.path for route in app.routes if "{" not in route.path} | {"/livez", "/readyz"})


class EmbeddingApi:
    def __init__(self, get_runtime: Callable[[], ServingRuntime]) -> None:
        self._runtime = get_runtime
        self.methods: dict[str, set[str]] = {}  # path -> allowed methods, for 405s

    # ---- open routes: health, readiness, info ----
    async def health(self, request: Request) -> Response:
        return self._json({"status": "ok"}, 200, self._current_version())

    async def ready(self, request: Request) -> Response:
        runtime = self._runtime()
        model = runtime.model
        if model is None:
            return self._error(
                ApiError(503, "model_not_ready", runtime.holder.not_ready_reason), NO_MODEL, "/ready"
            )
        if runtime.holder.integrity_problem is not None:  # still serving, but not safe to (re)start on
            return self._error(
                ApiError(503, "model_files_changed", runtime.holder.integrity_problem),
                model.version,
                "/ready",
            )
        return self._json({"status": "ready", "model_version": model.version}, 200, model.version)

    async def info(self, request: Request) -> Response:
        runtime = self._runtime()
        model = runtime.model
        settings = runtime.settings
        # No server paths leave the process (service/api/redact.py): the operator's log has them in full.
        payload = {
            "model_name": settings.model_name,
            "ready": model is not None,
            "not_ready_reason": None if model else hide_paths(runtime.holder.not_ready_reason),
            "model": hide_paths_in(model.to_dict()) if model else None,
            "source": hide_paths(runtime.source),
            "last_refused_version": hide_paths_in(runtime.holder.last_refusal),
            # Which version this replica serves and when it last looked at the registry's champion pointer.
            "replica": _replica_status(runtime, model),
            "limits": {
                "max_inputs_per_request": settings.max_inputs_per_request,
                "max_input_chars": settings.max_input_chars,
                "max_payload_bytes": settings.max_payload_bytes,
                "max_concurrent_requests": settings.max_concurrent_requests,
                "request_timeout_s": settings.request_timeout_s,
                "max_tokens": model.embedder.max_seq_length if model else None,
                "truncate": settings.truncate,
            },
            "batching": {
                "max_batch_size": settings.max_batch_size,
                "max_batch_tokens": runtime.batcher.max_batch_tokens,  # the device's default when unset
                "max_batch_delay_ms": settings.max_batch_delay_ms,
            },
            "api_key_required": settings.api_key is not None,
            "version_header": VERSION_HEADER,
            "settings": [{**row, "value": hide_paths_in(row["value"])} for row in settings.describe()],
        }
        return self._json(payload, 200, model.version if model else NO_MODEL)

    async def metrics(self, request: Request) -> Response:
        from service.api.metrics import exposition

        self._runtime().metrics.flush()  # this worker's buffered values first; the others flush every loop turn
        body, content_type = await asyncio.to_thread(exposition)  # reads every worker's files: off the loop
        return Response(body, 200, media_type=content_type, headers={VERSION_HEADER: self._current_version()})

    async def not_found(self, request: Request) -> Response:
        """Any other path (404), or a known path with the wrong method (405): the catch-all route matches
        before Starlette would answer 405 itself."""
        path = request.url.path
        allowed = self.methods.get(path)
        if allowed:
            error = ApiError(
                405,
                "method_not_allowed",
                f"{request.method} {path}: method not allowed; allowed: {', '.join(sorted(allowed))}",
                headers={"Allow": ", ".join(sorted(allowed))},
            )
        else:
            error = ApiError(
                404,
                "not_found",
                f"no route {request.method} {path}; routes: POST /v1/embeddings, "
                f"POST /embed, GET /v1/models, /health, /ready, /info, /metrics",
            )
        return self._error(error, self._current_version(), "unmatched")

    # ---- model routes ----
    async def list_models(self, request: Request) -> Response:
        return await self._model_route(request, "/v1/models", self._list_models)

    async def openai_embeddings(self, request: Request) -> Response:
        return await self._model_route(request, "/v1/embeddings", self._openai_embeddings)

    async def native_embed(self, request: Request) -> Response:
        return await self._model_route(request, "/embed", self._native_embed)

    async def _model_route(
        self,
        request: Request,
        route: str,
        handle: Callable[[Request, ServingRuntime, ServingModel], Awaitable[Response]],
    ) -> Response:
        runtime = self._runtime()
        metrics = runtime.metrics
        started = time.perf_counter()
        model = runtime.model
        version = model.version if model else NO_MODEL
        metrics.request_started()
        try:
            with runtime.concurrency.admit():
                if model is None:
                    raise ApiError(503, "model_not_ready", runtime.holder.not_ready_reason)
                # A deadline on this task, not wait_for's extra task per request (~20 µs of event-loop CPU).
                async with asyncio.timeout(runtime.settings.request_timeout_s):
                    response = await handle(request, runtime, model)
        except ApiError as err:
            response = self._error(err, version, route)
        except ModelServiceError as err:  # split mode: the model process is not there or refused the call
            response = self._error(ApiError(503, "model_not_ready", str(err)), version, route)
        except TimeoutError:
            response = self._error(
                ApiError(
                    504,
                    "timeout",
                    f"no answer within {runtime.settings.request_timeout_s} "
                    f"s (EMBEDGATE_REQUEST_TIMEOUT_S); send fewer texts per request or "
                    f"retry when the server is less busy",
                ),
                version,
                route,
            )
        except Exception:  # a bug, not the client's fault: log it here, never send the traceback
            logger.exception("%s failed", route)
            response = self._error(
                ApiError(
                    500, "internal_error", "the server failed to answer this request; the error is in its log"
                ),
                version,
                route,
            )
        finally:
            metrics.request_finished()
        # Buffered: written once per turn of the event loop for every request finishing in it (service/api/metrics.py).
        metrics.add(metrics.requests, (route, str(response.status_code)))
        metrics.observe_later(metrics.latency, (route,), time.perf_counter() - started)
        return response

    async def _list_models(self, request: Request, runtime: ServingRuntime, model: ServingModel) -> Response:
        created = calendar.timegm(time.strptime(model.loaded_at, "%Y-%m-%dT%H:%M:%SZ"))
        service_row = {
            "id": runtime.settings.model_name,
            "object": "model",
            "created": created,
            "owned_by": "embedgate",
        }
        data = [service_row, *role_rows(service_row, model.embedder.info.prompts)]
        if runtime.versions is not None:
            data += list_versions(runtime.versions, created)
        return self._json({"object": "list", "data": data}, 200, model.version)

    async def _resolve_model(
        self, runtime: ServingRuntime, requested: str | None, champion: ServingModel
    ) -> ServingModel:
        """The version `model` names (docs/versions.md): an alias, a pinned version, or 404 listing them."""
        name = runtime.settings.model_name
        if runtime.versions is None:  # a Bento's model store serves one version
            check_model_name(requested, (name, f"{name}:{champion.version}", champion.version))
            return champion
        try:
            return await runtime.versions.resolve(requested, name, champion)
        except VersionNotFound as err:
            raise ApiError(404, "model_not_found", str(err), param="model") from None
        except VersionUnavailable as err:
            raise ApiError(503, "model_not_ready", str(err), param="model") from None

    async def _openai_embeddings(
        self, request: Request, runtime: ServingRuntime, model: ServingModel
    ) -> Response:
        body = await self._read_json(request, runtime)
        parsed = parse_openai_request(body, _limits(runtime))
        name = runtime.settings.model_name
        model = await self._resolve_model(runtime, parsed.model, model)
        embedded = await self._embed(runtime, model, parsed, "/v1/embeddings")
        # The role too (`embedgate-embedder:v0003:query`): a client can see which prompt its vectors got.
        label = f"{name}:{model.version}" + (f":{parsed.input_type}" if parsed.input_type else "")
        payload = openai_body(embedded.vectors, embedded.processed_tokens, label, parsed.encoding_format)
        return self._embedded_response(payload, runtime, model, parsed, embedded)

    async def _native_embed(self, request: Request, runtime: ServingRuntime, model: ServingModel) -> Response:
        body = await self._read_json(request, runtime)
        parsed = parse_native_request(body, _limits(runtime))
        model = await self._resolve_model(runtime, parsed.model, model)
        embedded = await self._embed(runtime, model, parsed, "/embed")
        return self._embedded_response(native_body(embedded.vectors), runtime, model, parsed, embedded)

    async def _read_json(self, request: Request, runtime: ServingRuntime) -> dict[str, Any]:
        return parse_json_object(await read_body(request, runtime.settings.max_payload_bytes))

    async def _embed(
        self, runtime: ServingRuntime, model: ServingModel, parsed: EmbeddingRequest, route: str
    ) -> Embedded:
        dimensions = resolve_dimensions(parsed.dimensions, model.dims, model.serving_dim)
        prompt = prompt_for(model.embedder.info.prompts, parsed.input_type, parsed.prompt_name)
        texts = tuple(apply_prompt(parsed.texts, prompt))  # the model reads prompt + text, as it was trained
        max_tokens = model.embedder.max_seq_length

        def check(encoded: TokenizedTexts) -> None:
            """The token limits, once the texts are tokenised (the request's only tokenisation)."""
            check_request_tokens(encoded.token_counts, max_tokens, runtime.settings.max_request_tokens)
            if any(encoded.truncated) and not parsed.truncate:
                over = [
                    (index, count) for index, count in enumerate(encoded.token_counts) if count > max_tokens
                ]
                listed = ", ".join(f"text {index} has {count}" for index, count in over[:5])
                raise ApiError(
                    422,
                    "too_many_tokens",
                    f"{listed} tokens; the model reads at most {max_tokens} (special "
                    f'tokens included) and truncation is off: shorten the text, or send "truncate": true '
                    f"(/embed) / set EMBEDGATE_TRUNCATE=true",
                    param="truncate",
                )

        chars = sum(len(text) for text in texts)
        if chars <= INLINE_TOKENIZE_CHARS:
            # Tokenised, cut to `dimensions` and re-normalised in the model's thread, batched with the other requests
            # queued meanwhile (service/batching/batcher.py): none of it on the event loop.
            encoded, vectors = await runtime.batcher.embed_texts(model, texts, dimensions, check)
        else:  # a long request is tokenised on its own thread, never holding the model's thread for it
            encoded = await asyncio.get_running_loop().run_in_executor(None, model.embedder.encode, texts)
            check(encoded)
            vectors = await runtime.batcher.embed_tokens(model, encoded.ids, dimensions)
        if chars >= TRIM_AFTER_CHARS:  # hand the request's peak back to the OS
            asyncio.get_running_loop().run_in_executor(None, release_freed_memory)
        counts, truncated = encoded.token_counts, encoded.truncated
        processed = sum(min(count, max_tokens) for count in counts)
        metrics = runtime.metrics
        metrics.add(metrics.inputs, (route,), len(counts))
        metrics.add(metrics.tokens, (route,), processed)
        if any(truncated):
            metrics.add(metrics.truncated, (route,), sum(truncated))
        return Embedded(vectors, dimensions, counts, truncated, processed)

    def _embedded_response(
        self,
        payload: bytes,
        runtime: ServingRuntime,
        model: ServingModel,
        parsed: EmbeddingRequest,
        embedded: Embedded,
    ) -> Response:
        background = None
        if runtime.drift is not None:  # after the response is sent: capture never delays an answer
            background = BackgroundTask(_record_drift, runtime.drift, parsed.texts, embedded, model.version)
        return Response(
            payload,
            200,
            media_type="application/json",
            headers={VERSION_HEADER: model.version},
            background=background,
        )

    # ---- helpers ----
    def _current_version(self) -> str:
        model = self._runtime().model
        return model.version if model else NO_MODEL

    def _json(self, payload: Any, status: int, version: str) -> Response:
        return Response(
            dumps(payload), status, media_type="application/json", headers={VERSION_HEADER: version}
        )

    def _error(self, error: ApiError, version: str, route: str) -> Response:
        metrics = self._runtime().metrics
        metrics.add(metrics.errors, (route, error.code))
        if (
            error.status >= 500
        ):  # server-side reasons (a refused version, a missing registry) name server files
            error.message = hide_paths(error.message)
        return Response(
            dumps(error.body()),
            error.status,
            media_type="application/json",
            headers={**error.headers, VERSION_HEADER: version},
        )


def _limits(runtime: ServingRuntime) -> RequestLimits:
    settings = runtime.settings
    return RequestLimits(settings.max_inputs_per_request, settings.max_input_chars, settings.truncate)


def _record_drift(capture: Any, texts: tuple[str, ...], embedded: Embedded, version: str) -> None:
    try:
        capture.record(
            list(texts),
            embedded.vectors,
            embedded.token_counts,
            embedded.truncated,
            version,
            embedded.dimensions,
        )
    except Exception:  # the capture promises not to raise; serving must not depend on that promise
        logger.exception("drift capture failed; serving continues")


def _replica_status(runtime: Any, model: Any) -> dict[str, Any] | None:
    """/info's replica block: None when serving from the BentoML model store (no registry to watch)."""
    watcher = getattr(runtime, "watcher", None)
    if watcher is None:
        return None
    checked = watcher.last_checked_at
    return {
        "serving_version": model.version if model else None,
        "last_checked_at": None
        if checked is None
        else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(checked)),
        "poll_interval_s": runtime.settings.poll_interval_s,
    }
