"""The BentoML service: the champion's ONNX graph behind an OpenAI-compatible and a TEI-style embedding API.

    EMBEDGATE_REGISTRY=registry bentoml serve service.app:EmbedgateService --port 3000
    embedgate serve --registry registry --port 3000            # the same, with flags

Settings are EMBEDGATE_* variables (service/settings.py, docs/serving.md). This module is what `bentoml serve` and
`bentoml build` import, so it only defines the service; the model loads in `__init__`, in the worker process.
The routes are a Starlette app (service/api/routes.py) mounted at "/", so every answer, errors included, has our JSON
shape; BentoML adds process management, /livez, /readyz and Bentos (its path-labelled HTTP metrics are off: our
/metrics serves ours).
"""

from __future__ import annotations

import gc
import logging

import bentoml

from service.api.edge_guard import ApiKeyGate, JsonErrors
from service.api.http_protocol import install as install_http_protocol
from service.api.routes import EMBEDDING_PATHS, create_http_app, known_routes
from service.settings import MAX_REQUEST_TIMEOUT_S
from service.versions.version_header import NO_MODEL, VERSION_HEADER, ModelVersionHeader


def _current_runtime():
    return bentoml.get_current_service().runtime


def _runtime_if_started():
    """The runtime, or None while the service instance is still being built (the edge guard answers 503 then)."""
    service = bentoml.get_current_service()
    return getattr(service, "runtime", None) if service is not None else None


def _current_version() -> str:
    service = bentoml.get_current_service()
    model = service.runtime.model if service is not None else None
    return model.version if model is not None else NO_MODEL


# Runs when BentoML's worker imports this module, before it configures uvicorn: the only point where uvicorn's
# protocol can still be chosen (service/api/http_protocol.py says why the limits need it).
install_http_protocol()
http_app = create_http_app(_current_runtime)


@bentoml.asgi_app(http_app, path="/")
@bentoml.service(
    name="embedgate",
    # BentoML's own timer is only a backstop: EMBEDGATE_REQUEST_TIMEOUT_S (at most this) answers first, in JSON.
    traffic={"timeout": MAX_REQUEST_TIMEOUT_S},
    # One process by default; scale with `embedgate serve --workers N` or replicas (docs/serving.md).
    workers=1,
    # BentoML's HTTP metrics label every series with the raw request path: a random-path flood grew /metrics without
    # bound. Ours (service/api/metrics.py, served by our /metrics route) label by route from the route table only.
    metrics={"enabled": False, "namespace": "bentoml_service"},
    labels={"project": "embedgate", "model_version_header": VERSION_HEADER},
    # BentoML runs OpenTelemetry's ASGI middleware on every request even though its tracing samples nothing by
    # default (sample_rate 0): spans for the request and each message sent, then dropped. On the embedding routes
    # that cost c16 ~15% of its throughput and doubled its p99 (docs/serving.md, "Measured"). A user who turns
    # tracing on and wants these routes traced sets `tracing.excluded_urls` (theirs replaces this one).
    tracing={"excluded_urls": [f"{path}$" for path in EMBEDDING_PATHS]},
)
class EmbedgateService:
    """Loads the champion (registry) or the packed model (BentoML model store) and serves it."""

    def __init__(self) -> None:
        from service.runtime import ServingRuntime
        from service.settings import ServeSettings

        # BentoML's server logging passes only warnings from other loggers; swaps and refusals are worth INFO.
        service_logger = logging.getLogger("embedgate")
        service_logger.setLevel(logging.INFO)
        service_logger.disabled = False
        self.runtime = ServingRuntime.create(ServeSettings.from_env())

    @bentoml.on_startup
    async def start_background_work(self) -> None:
        await self.runtime.start()
        # What exists now (bentoml, onnxruntime, the drift stack, the first model) lives as long as the process:
        # keep it out of every full garbage collection. Under 32 saturating clients p99 fell ~20% (240-268 ms
        # to 197-208 ms, tiny model, 2 cores); reference counting still frees a swapped-out model.
        gc.freeze()

    @bentoml.on_shutdown
    async def stop_background_work(self) -> None:
        await self.runtime.stop()

    def __is_ready__(self) -> bool:
        # BentoML's /readyz agrees with our /ready: ready only after a model passed its warm-up embed.
        return self.runtime.model is not None and self.runtime.holder.integrity_problem is None


# Outermost first: every error any inner layer answers becomes JSON; the version header goes on every answer; the
# API key is checked before routing (service/api/edge_guard.py).
EmbedgateService.add_asgi_middleware(JsonErrors)
EmbedgateService.add_asgi_middleware(ModelVersionHeader, current_version=_current_version)
EmbedgateService.add_asgi_middleware(
    ApiKeyGate, get_runtime=_runtime_if_started, known_routes=known_routes(http_app)
)
