"""Split mode: HTTP workers apart from the model (issue 26 part 2), as BentoML composes services (`bentoml.depends`).

    EMBEDGATE_REGISTRY=registry bentoml serve service.split.app:EmbedgateHttp --port 3000
    embedgate serve --registry registry --http-workers 4            # the same, with the HTTP workers counted

`EmbedgateHttp` (N workers, `services.embedgate_http.workers`) answers every route exactly as the single-process
service does (service/app.py: the same routes, middleware, limits, metrics and drift capture) and tokenises, but runs
no model: it sends token ids to `EmbedgateModel` (one worker per device), which runs the graph with its batcher
and returns full-dim vectors (service/split/halves.py). Each HTTP worker loads the served versions too, for their
tokenizers, dims and prompts (its graphs run only the warm-up, with one thread each), so both sides follow
promotions on their own; a version the model process has not loaded yet is loaded there on first use.

The HTTP workers call the model process with packed ids on a plain route (`/packed/embed`, service/split/halves.py), not
through `embed_ids`, BentoML's API call: that one is kept as the conventional composition it was measured against
(2.3 ms of the model's event loop per call against 1.6 ms). Single process stays the default: on a CPU the split
frees ~6% of the model's core for a second core and a hop per request (docs/serving.md, "Split mode, measured").
"""

from __future__ import annotations

import logging

import bentoml
import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.api.edge_guard import ApiKeyGate, JsonErrors
from service.api.http_protocol import install as install_http_protocol
from service.api.routes import EMBEDDING_PATHS, create_http_app, known_routes
from service.app import _current_version, _runtime_if_started
from service.settings import MAX_REQUEST_TIMEOUT_S
from service.versions.version_header import VERSION_HEADER, ModelVersionHeader

install_http_protocol()


def _current_runtime():
    return bentoml.get_current_service().runtime


def _service_logging() -> None:
    # BentoML's server logging passes only warnings from other loggers; swaps and refusals are worth INFO.
    service_logger = logging.getLogger("embedgate")
    service_logger.setLevel(logging.INFO)
    service_logger.disabled = False


async def _packed_embed(request: Request) -> Response:
    """The HTTP workers' call (service/split/halves.py, `pack_ids`): 200 with float32 bytes, else 4xx/5xx with the reason."""
    from service.split.halves import ModelServiceError, model_side_embed, pack_vectors, unpack_ids

    try:
        version, ids = unpack_ids(await request.body())
        vectors = await model_side_embed(bentoml.get_current_service().runtime, version, ids)
    except ValueError as err:
        return Response(str(err).encode(), 400, media_type="text/plain")
    except ModelServiceError as err:
        return Response(str(err).encode(), 503, media_type="text/plain")
    except Exception as err:  # the version failed to load, the graph failed: the HTTP worker answers 500
        logging.getLogger("embedgate.service").exception("packed embed failed")
        return Response(f"{type(err).__name__}: {err}".encode(), 500, media_type="text/plain")
    return Response(pack_vectors(vectors), media_type="application/octet-stream")


packed_app = Starlette(routes=[Route("/embed", _packed_embed, methods=["POST"])])


@bentoml.asgi_app(packed_app, path="/packed")
@bentoml.service(
    name="embedgate_model",
    traffic={"timeout": MAX_REQUEST_TIMEOUT_S},
    workers=1,  # one process per device: it batches the calls of every HTTP worker together
    metrics={"enabled": False, "namespace": "bentoml_service"},
    # Each call carries many client requests, which the HTTP workers log and trace already; per call, BentoML's
    # access log line and OpenTelemetry's dropped spans are CPU on the model's core.
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": ["/embed_ids$", "/packed/embed$"]},
)
class EmbedgateModel:
    """Runs the graph: token ids in, full-dim vectors out, batched across every HTTP worker's calls."""

    def __init__(self) -> None:
        from service.runtime import ServingRuntime
        from service.settings import ServeSettings

        _service_logging()
        # No drift capture here: the HTTP workers capture what they answer, as the single process does.
        self.runtime = ServingRuntime.create(ServeSettings.from_env(), drift=None)

    @bentoml.on_startup
    async def start_background_work(self) -> None:
        await self.runtime.start()

    @bentoml.on_shutdown
    async def stop_background_work(self) -> None:
        await self.runtime.stop()

    def __is_ready__(self) -> bool:
        return self.runtime.model is not None

    @bentoml.api
    async def embed_ids(self, version: str, ids: list[list[int]]) -> np.ndarray:
        from service.split.halves import model_side_embed

        return await model_side_embed(self.runtime, version, ids)


http_app = create_http_app(_current_runtime)


@bentoml.asgi_app(http_app, path="/")
@bentoml.service(
    name="embedgate_http",
    traffic={"timeout": MAX_REQUEST_TIMEOUT_S},
    workers=1,  # `embedgate serve --http-workers N` sets services.embedgate_http.workers
    metrics={"enabled": False, "namespace": "bentoml_service"},
    labels={"project": "embedgate", "model_version_header": VERSION_HEADER},
    tracing={
        "excluded_urls": [f"{path}$" for path in EMBEDDING_PATHS]
    },  # as service/app.py, for the same reason
)
class EmbedgateHttp:
    """The single-process service's routes, with the model in `EmbedgateModel`."""

    model_service = bentoml.depends(EmbedgateModel)

    def __init__(self) -> None:
        from service.runtime import ServingRuntime
        from service.settings import ServeSettings
        from service.split.halves import PACKED_PATH, RemoteBatcher, pack_ids, packed_client, unpack_vectors

        _service_logging()
        settings = ServeSettings.from_env()
        # This process's graphs only run their warm-up: one thread each, the cores are the model process's.
        self.runtime = ServingRuntime.create(settings.model_copy(update={"threads": 1}))
        from bentoml._internal.configuration.containers import BentoMLContainer

        # The model process's address, as BentoML gives it to `bentoml.depends` (a Unix socket on one host). Packed
        # calls, not `self.model_service.embed_ids(...)`: BentoML's API call cost the model's core 2.3 ms per call
        # (pickle, pydantic, its API layer; docs/serving.md "Split mode, measured").
        url = BentoMLContainer.remote_runner_mapping.get()[EmbedgateModel.name]
        client = self._model_client = packed_client(url, MAX_REQUEST_TIMEOUT_S)

        async def call(version: str, ids: list[list[int]]) -> np.ndarray:
            answer = await client.post(PACKED_PATH, content=pack_ids(version, ids))
            if answer.status_code != 200:
                raise RuntimeError(f"HTTP {answer.status_code}: {answer.text[:500]}")
            return unpack_vectors(answer.content)

        self.runtime.batcher = RemoteBatcher(
            call, self.runtime.batcher.max_batch_tokens, max_in_flight=settings.split_calls_in_flight
        )

    @bentoml.on_startup
    async def start_background_work(self) -> None:
        import gc

        await self.runtime.start()
        gc.freeze()  # as service/app.py: what exists now lives as long as the process

    @bentoml.on_shutdown
    async def stop_background_work(self) -> None:
        await self.runtime.stop()
        await self._model_client.aclose()

    def __is_ready__(self) -> bool:
        return self.runtime.model is not None and self.runtime.holder.integrity_problem is None


EmbedgateHttp.add_asgi_middleware(JsonErrors)
EmbedgateHttp.add_asgi_middleware(ModelVersionHeader, current_version=_current_version)
EmbedgateHttp.add_asgi_middleware(
    ApiKeyGate, get_runtime=_runtime_if_started, known_routes=known_routes(http_app)
)
