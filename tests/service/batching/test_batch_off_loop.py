"""Work taken off the event loop (issue 26 part 1): tokenising and Matryoshka cuts in the model's thread, batched
across requests; Prometheus values buffered per turn of the event loop. Each gives the answers the old path gave."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from service.api.errors import ApiError
from service.api.metrics import ServiceMetrics
from service.batching.batcher import MicroBatcher
from service.model.embedder import truncate_dims
from service.model.serving_model import load_version
from service.registry.registry import Registry
from tests.service.serving import promote

TEXTS = ["the tenant pays rent monthly", "a child with a fever needs fluids", "who pays the deposit?"]


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_exports):
    registry = Registry(tmp_path_factory.mktemp("off-loop") / "registry")
    return load_version(registry.version_dir(promote(registry, tiny_exports["a"])), precision=None, threads=1)


def _run(scenario):
    async def wrapped():
        batcher = MicroBatcher(max_batch_size=32, max_batch_tokens=4096)
        batcher.start()
        try:
            return await scenario(batcher)
        finally:
            await batcher.stop()

    return asyncio.run(wrapped())


def test_embed_texts_tokenises_in_the_model_thread_and_matches_the_inline_path(model):
    dims = model.dims[-1]  # the smallest exported dim: a real cut
    assert dims < model.embedder.full_dim
    threads: list[str] = []
    encode = model.embedder.encode

    def recording_encode(texts, truncate=True):
        threads.append(threading.current_thread().name)
        return encode(texts, truncate=truncate)

    async def scenario(batcher):
        object.__setattr__(model.embedder, "encode", recording_encode)
        try:
            return await asyncio.gather(*(batcher.embed_texts(model, [text], dims) for text in TEXTS))
        finally:
            object.__delattr__(model.embedder, "encode")

    results = _run(scenario)
    assert threads and all(name.startswith("embedgate-model") for name in threads), threads
    assert len(threads) < len(TEXTS)  # requests queued together were tokenised in one call
    for text, (encoded, vectors) in zip(TEXTS, results, strict=True):
        inline = model.embedder.encode([text])
        assert encoded == inline
        expected = truncate_dims(model.embedder.embed_tokens(inline.ids), dims)
        assert vectors.shape == (1, dims)
        np.testing.assert_allclose(vectors, expected, atol=1e-6)
        assert abs(float(np.linalg.norm(vectors[0])) - 1) < 1e-5


def test_a_failed_check_answers_that_request_only(model):
    def refuse_long(encoded):
        if max(encoded.token_counts) > 8:
            raise ApiError(422, "too_many_tokens", f"got {max(encoded.token_counts)} tokens, at most 8")

    async def scenario(batcher):
        long = " ".join(["word"] * 40)
        return await asyncio.gather(
            batcher.embed_texts(model, [long], None, refuse_long),
            batcher.embed_texts(model, ["short"], None, refuse_long),
            return_exceptions=True,
        )

    refused, served = _run(scenario)
    assert isinstance(refused, ApiError) and refused.code == "too_many_tokens"
    encoded, vectors = served
    assert vectors.shape == (1, model.embedder.full_dim) and encoded.token_counts[0] <= 8


def test_embed_texts_refuses_no_texts_and_an_unstarted_batcher(model):
    with pytest.raises(RuntimeError, match="start"):
        asyncio.run(MicroBatcher(max_batch_size=4).embed_texts(model, ["a"]))

    async def scenario(batcher):
        await batcher.embed_texts(model, [])

    with pytest.raises(ValueError, match="at least one text"):
        _run(scenario)


def test_mixed_dims_in_one_batch_each_get_their_own_cut(model):
    full = model.embedder.full_dim
    dims = [model.dims[-1], None, full, model.dims[-1]]

    async def scenario(batcher):
        return await asyncio.gather(*(batcher.embed_texts(model, [TEXTS[0]], wanted) for wanted in dims))

    results = _run(scenario)
    reference = model.embedder.embed_tokens(model.embedder.encode([TEXTS[0]]).ids)
    for wanted, (_, vectors) in zip(dims, results, strict=True):
        size = wanted or full
        expected = reference if size == full else truncate_dims(reference, size)
        assert vectors.shape == (1, size)
        np.testing.assert_allclose(vectors, expected, atol=1e-6)


def _observe_both(direct: ServiceMetrics, buffered: ServiceMetrics, route: str, seconds: float) -> None:
    direct.requests.labels(route, "200").inc()
    direct.latency.labels(route).observe(seconds)
    direct.queue_wait.observe(seconds / 2)
    buffered.add(buffered.requests, (route, "200"))
    buffered.observe_later(buffered.latency, (route,), seconds)
    buffered.observe_later(buffered.queue_wait, (), seconds / 2)


def _values(exposition: bytes) -> list[str]:
    """The samples, without the `_created` timestamps (they differ between any two registries)."""
    return [line for line in exposition.decode().splitlines() if "_created" not in line]


def test_buffered_metrics_write_what_direct_updates_write():
    direct_registry, buffered_registry = CollectorRegistry(), CollectorRegistry()
    direct, buffered = ServiceMetrics(direct_registry), ServiceMetrics(buffered_registry)

    async def scenario():
        # Values on a bucket bound, between bounds, above the last one; two routes.
        for seconds in (0.002, 0.003, 0.05, 0.5, 42.0, 0.0):
            for route in ("/v1/embeddings", "/embed"):
                _observe_both(direct, buffered, route, seconds)
        buffered.request_started()
        buffered.request_started()
        buffered.request_finished()
        assert b'embedgate_requests_total{route="/embed"' not in generate_latest(buffered_registry)  # not yet
        await asyncio.sleep(0)  # one turn of the loop: the scheduled flush ran
        return generate_latest(buffered_registry)

    written = asyncio.run(scenario())
    direct.in_flight.set(1)
    assert _values(written) == _values(generate_latest(direct_registry))
    assert b'embedgate_request_duration_seconds_bucket{le="0.005",route="/embed"} 3.0' in written


def test_buffered_metrics_outside_an_event_loop_write_at_once():
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    metrics.add(metrics.inputs, ("/embed",), 3)
    assert b'embedgate_inputs_total{route="/embed"} 3.0' in generate_latest(registry)
