"""The HTTP worker's side of split mode (service/split/halves.py): rows of concurrent requests share one call to the model
process, each request gets its own rows back (cut to its dims), a dropped keep-alive connection is retried once,
and a failing model process fails the requests with a message naming the version."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

from service.model.embedder import truncate_dims
from service.split.halves import ModelServiceError, RemoteBatcher


def _model(version: str = "v0001") -> SimpleNamespace:
    return SimpleNamespace(version=version)


class FakeModelService:
    """Answers each row with a 4-dim vector built from its first token id; fails the first `fail` calls."""

    def __init__(self, fail: int = 0, error: Exception | None = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.fail, self.error = fail, error

    async def __call__(self, version: str, ids: list[list[int]]) -> np.ndarray:
        self.calls.append((version, len(ids)))
        await asyncio.sleep(0.01)
        if self.fail:
            self.fail -= 1
            raise self.error or httpx.RemoteProtocolError("Server disconnected")
        return np.array([[row[0], 1.0, 2.0, len(row)] for row in ids], dtype=np.float32)


def test_concurrent_requests_share_calls_and_get_their_own_rows():
    service = FakeModelService()
    batcher = RemoteBatcher(service, max_batch_tokens=512, max_in_flight=1)

    async def scenario():
        requests = [[[100 * index + row, 7] for row in range(index + 1)] for index in range(6)]
        return requests, await asyncio.gather(*(batcher.embed_tokens(_model(), ids) for ids in requests))

    requests, results = asyncio.run(scenario())
    for ids, vectors in zip(requests, results, strict=True):
        np.testing.assert_array_equal(vectors[:, 0], [row[0] for row in ids])
    assert len(service.calls) < len(requests)  # the requests queued during the first call went in one
    assert sum(rows for _, rows in service.calls) == sum(len(ids) for ids in requests)


def test_rows_of_two_versions_go_in_separate_calls_and_dims_are_cut():
    service = FakeModelService()
    batcher = RemoteBatcher(service, max_batch_tokens=512)

    async def scenario():
        return await asyncio.gather(
            batcher.embed_tokens(_model("v0001"), [[1, 2]], dimensions=2),
            batcher.embed_tokens(_model("v0002"), [[3, 4]]),
        )

    cut, full = asyncio.run(scenario())
    assert sorted(version for version, _ in service.calls) == ["v0001", "v0002"]
    np.testing.assert_allclose(cut, truncate_dims(np.array([[1, 1, 2, 2]], dtype=np.float32), 2))
    assert full.shape == (1, 4)


def test_a_dropped_connection_is_retried_once():
    service = FakeModelService(fail=1)
    vectors = asyncio.run(RemoteBatcher(service, max_batch_tokens=512).embed_tokens(_model(), [[5]]))
    assert vectors[0, 0] == 5 and len(service.calls) == 2


@pytest.mark.parametrize("fail, error", [(2, None), (1, RuntimeError("model process: no such version"))])
def test_a_failing_model_process_fails_the_request_naming_the_version(fail, error):
    service = FakeModelService(fail=fail, error=error)
    with pytest.raises(ModelServiceError, match="model service failed for v0007"):
        asyncio.run(RemoteBatcher(service, max_batch_tokens=512).embed_tokens(_model("v0007"), [[5]]))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="max_in_flight must be >= 1, got 0"):
        RemoteBatcher(FakeModelService(), max_batch_tokens=512, max_in_flight=0)
    with pytest.raises(ValueError, match="at least one row"):
        asyncio.run(RemoteBatcher(FakeModelService(), max_batch_tokens=512).embed_tokens(_model(), []))


def test_calls_in_flight_setting_is_checked():
    from service.settings import ServeSettings, SettingsError

    assert ServeSettings.from_env({"EMBEDGATE_SPLIT_CALLS_IN_FLIGHT": "1"}).split_calls_in_flight == 1
    with pytest.raises(
        SettingsError, match="EMBEDGATE_SPLIT_CALLS_IN_FLIGHT='0'.*greater than or equal to 1"
    ):
        ServeSettings.from_env({"EMBEDGATE_SPLIT_CALLS_IN_FLIGHT": "0"})


def test_packed_ids_and_vectors_travel_exactly():
    from service.split.halves import pack_ids, pack_vectors, unpack_ids, unpack_vectors

    version, rows = unpack_ids(pack_ids("v0002@v0001", [[101, 7592, 102], [101, 102], [5]]))
    assert version == "v0002@v0001" and [row.tolist() for row in rows] == [[101, 7592, 102], [101, 102], [5]]
    vectors = np.random.default_rng(0).random((3, 5), dtype=np.float32)
    assert unpack_vectors(pack_vectors(vectors)).tobytes() == vectors.tobytes()


@pytest.mark.parametrize("body", [b"", b"\x05\x00v0001\x02\x00\x00\x00\x03\x00\x00\x00", b"\xff\xff"])
def test_a_malformed_packed_body_is_refused(body):
    from service.split.halves import unpack_ids

    with pytest.raises(ValueError, match="packed ids"):
        unpack_ids(body)


def test_packed_client_takes_the_addresses_bentoml_gives():
    from service.split.halves import packed_client

    assert str(packed_client("tcp://127.0.0.1:4000", 5).base_url) == "http://127.0.0.1:4000"
    assert str(packed_client("file:///tmp/x/1.sock", 5).base_url) == "http://embedgate-model"
    with pytest.raises(ModelServiceError, match="expected file://, tcp:// or http"):
        packed_client("ftp://host", 5)


def test_a_model_process_that_fails_is_a_503_not_a_500(tmp_path, tiny_exports):
    """In process: the routes over a RemoteBatcher whose model process drops every call."""
    from prometheus_client import CollectorRegistry
    from starlette.testclient import TestClient

    from service.api.metrics import ServiceMetrics
    from service.api.routes import create_http_app
    from service.registry.registry import Registry
    from service.runtime import ServingRuntime
    from service.settings import ServeSettings
    from tests.service.serving import promote

    registry = Registry(tmp_path / "registry")
    promote(registry, tiny_exports["a"])
    runtime = ServingRuntime.create(
        ServeSettings(registry=registry.root, threads=1),
        ServiceMetrics(CollectorRegistry()),
        drift=None,
        registry_chosen=True,
    )
    runtime.batcher = RemoteBatcher(FakeModelService(fail=99), max_batch_tokens=512)
    with TestClient(create_http_app(lambda: runtime)) as client:
        answer = client.post("/v1/embeddings", json={"input": "the tenant pays rent"})
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert error["code"] == "model_not_ready" and "model service failed for v0001" in error["message"]
