"""Benchmark only: a sentence-transformers model in PyTorch behind the same HTTP layer as our service, the baseline
of benchmarks/serve_throughput.py (which starts it; torch is allowed here, never in `service`).

    EMBEDGATE_BENCH_MODEL=path/to/all-MiniLM-L6-v2 \
        bentoml serve torch_embed_server:TorchEmbedder --working-dir benchmarks --port 3001

Same layer: a BentoML service mounting a Starlette route, with our request parsing (service.api_models) and JSON
encoding (service.api_responses). What differs is what a plain sentence-transformers deployment does: one
`model.encode` per request (no batching across requests), one at a time (concurrent torch calls on the same cores
only slow each other down), vectors sliced to `dimensions` and re-normalised.
"""

from __future__ import annotations

import asyncio
import os

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.api_errors import ApiError
from service.api_models import RequestLimits, parse_openai_request
from service.api_responses import dumps, openai_body
from service.limits import parse_json_object

LIMITS = RequestLimits(max_inputs=256, max_chars=32_768, default_truncate=True)


async def embeddings(request: Request) -> Response:
    service = bentoml.get_current_service()
    try:
        parsed = parse_openai_request(parse_json_object(await request.body()), LIMITS)
    except ApiError as err:
        return Response(dumps(err.body()), err.status, media_type="application/json")
    async with service.lock:
        vectors, tokens = await asyncio.get_running_loop().run_in_executor(None, service.encode, parsed.texts,
                                                                           parsed.dimensions)
    return Response(openai_body(vectors, tokens, "torch", parsed.encoding_format), media_type="application/json")


http_app = Starlette(routes=[Route("/v1/embeddings", embeddings, methods=["POST"])])


@bentoml.asgi_app(http_app, path="/")
@bentoml.service(name="torch-embedder", traffic={"timeout": 600})
class TorchEmbedder:
    def __init__(self) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(int(os.environ.get("EMBEDGATE_BENCH_THREADS", os.cpu_count() or 1)))
        self.model = SentenceTransformer(os.environ["EMBEDGATE_BENCH_MODEL"], device="cpu")
        self.lock = asyncio.Lock()
        self.encode(["warm-up sentence"], None)

    def encode(self, texts: tuple[str, ...], dimensions: int | None):
        import numpy as np

        vectors = self.model.encode(list(texts), batch_size=32, convert_to_numpy=True, normalize_embeddings=True)
        if dimensions is not None and dimensions < vectors.shape[1]:
            vectors = vectors[:, :dimensions]
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        tokens = int(self.model.tokenize(list(texts))["attention_mask"].sum())
        return vectors.astype(np.float32), tokens
