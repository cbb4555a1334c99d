"""The served version's files are re-verified periodically: changed or gone -> /ready 503 with the reason, while the
loaded model keeps answering; restored -> ready again. In process, with the tiny model and the real HTTP app."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from service.api.metrics import ServiceMetrics
from service.api.routes import create_http_app
from service.registry.registry import Registry
from service.runtime import ServingRuntime
from service.settings import ServeSettings
from tests.service.serving import promote


@pytest.fixture
def served(tmp_path, tiny_exports):
    registry = Registry(tmp_path / "registry")
    promote(registry, tiny_exports["a"])
    runtime = ServingRuntime.create(
        ServeSettings(registry=registry.root),
        ServiceMetrics(CollectorRegistry()),
        drift=None,
        registry_chosen=True,
    )
    assert runtime.model is not None and runtime.model.version == "v0001"
    with TestClient(create_http_app(lambda: runtime)) as client:
        client.portal.call(runtime.batcher.start)  # the batcher runs in the client's event loop
        yield registry, runtime, client
        client.portal.call(runtime.batcher.stop)


def _embed_ok(client: TestClient) -> bool:
    response = client.post("/v1/embeddings", json={"input": ["heart", "the tenant pays rent"]})
    return response.status_code == 200 and len(response.json()["data"]) == 2


@pytest.mark.parametrize("damage", ["changed", "gone"])
def test_changed_or_missing_served_files_make_ready_503_while_the_model_keeps_serving(served, damage):
    registry, runtime, client = served
    graph = next((registry.version_dir("v0001") / "onnx").rglob("*.onnx"))
    original = graph.read_bytes()
    assert runtime.watcher.reverify() is None and client.get("/ready").status_code == 200

    if damage == "changed":
        graph.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    else:
        graph.unlink()
    problem = runtime.watcher.reverify()
    assert problem is not None and "v0001 no longer match its manifest" in problem
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "model_files_changed"
    assert str(registry.root) not in ready.text  # no server path in the answer
    assert _embed_ok(client)  # the loaded model still answers

    graph.write_bytes(original)
    assert runtime.watcher.reverify() is None and client.get("/ready").status_code == 200


def test_the_watch_loop_reverifies_on_its_interval(served):
    registry, runtime, _ = served
    (registry.version_dir("v0001") / "onnx" / "embedder.json").write_text("{}")

    async def watch_briefly() -> None:
        task = asyncio.get_running_loop().create_task(runtime.watcher.watch(0.05, verify_interval_s=0.1))
        await asyncio.sleep(1.0)
        task.cancel()

    asyncio.run(watch_briefly())
    assert runtime.holder.integrity_problem is not None
