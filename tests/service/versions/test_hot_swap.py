"""Hot swap: the watcher loads a new champion beside the old one and switches; broken versions are refused while
the old one keeps serving; in-flight requests finish on the model they started with; batches never mix versions.
The last test runs it end to end through `embedgate serve` on a registry that starts empty."""

from __future__ import annotations

import asyncio
import functools
import sys

import httpx
import numpy as np
import pytest

from service.api.metrics import ServiceMetrics
from service.batching.batcher import MicroBatcher
from service.model.serving_model import load_version
from service.registry.registry import Registry
from service.versions.hot_swap import ChampionWatcher, ModelHolder
from tests.service.serving import (
    TINY_SERVING_DIM,
    ServerProcess,
    free_port,
    metric_value,
    point_champion,
    promote,
)

HEADER = "x-embedgate-model-version"
TEXTS = ["heart blood pressure", "the tenant pays rent", "a child with a fever"]


def _corrupt_graph(registry: Registry, version: str) -> None:
    graph = registry.version_dir(version) / "onnx" / "d32" / "model.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte changed: only the sha256 can tell
    graph.write_bytes(bytes(data))


class _Counts:
    """Reads the watcher's metrics from a private Prometheus registry."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry()
        self.metrics = ServiceMetrics(self.registry)

    def swaps(self, version: str) -> float:
        return self.registry.get_sample_value("embedgate_model_swaps_total", {"version": version}) or 0.0

    def failures(self, version: str, reason: str) -> float:
        labels = {"version": version, "reason": reason}
        return self.registry.get_sample_value("embedgate_model_swap_failures_total", labels) or 0.0

    def serving(self, version: str) -> float | None:
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name == "embedgate_model_info" and sample.labels["version"] == version:
                    return sample.value
        return None


@pytest.fixture()
def watched(tmp_path):
    registry = Registry(tmp_path / "registry")
    holder = ModelHolder()
    counts = _Counts()
    load = functools.partial(load_version, precision=None, threads=1)
    return registry, holder, counts, ChampionWatcher(registry, holder, load=load, metrics=counts.metrics)


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_exports):
    """{"a": export a served as v0001, "b": export b served as v0002}."""
    registry = Registry(tmp_path_factory.mktemp("two-versions") / "registry")
    return {
        name: load_version(
            registry.version_dir(promote(registry, tiny_exports[name])), precision=None, threads=1
        )
        for name in ("a", "b")
    }


def test_watcher_follows_promotions_and_rollbacks(watched, tiny_exports):
    registry, holder, counts, watcher = watched
    outcome = watcher.check()
    assert outcome.action == "no_champion" and holder.current is None
    assert (
        "no champion in the registry" in holder.not_ready_reason
        and "embedgate promote" in holder.not_ready_reason
    )

    promote(registry, tiny_exports["a"])
    assert watcher.check().action == "swapped" and holder.current.version == "v0001"
    assert watcher.check().action == "unchanged"
    first = holder.current

    promote(registry, tiny_exports["b"])
    outcome = watcher.check()
    assert (outcome.action, outcome.version, outcome.detail) == ("swapped", "v0002", "from v0001")
    assert holder.current.serving_dim == TINY_SERVING_DIM
    assert not np.allclose(holder.current.embedder.embed(TEXTS), first.embedder.embed(TEXTS))

    registry.rollback(who="tests", reason="back")
    assert watcher.check().version == "v0001" and holder.current.version == "v0001"
    assert (counts.swaps("v0001"), counts.swaps("v0002")) == (2, 1)
    assert (counts.serving("v0001"), counts.serving("v0002")) == (1, 0)


def test_a_corrupted_champion_is_refused_and_the_old_one_keeps_serving(watched, tiny_exports):
    registry, holder, counts, watcher = watched
    promote(registry, tiny_exports["a"])
    watcher.check()
    serving = holder.current
    promote(registry, tiny_exports["b"], make_champion=False)
    _corrupt_graph(registry, "v0002")
    point_champion(registry, "v0002", previous="v0001")

    outcome = watcher.check()
    assert outcome.action == "refused" and outcome.version == "v0002"
    assert "sha256 does not match the manifest" in outcome.detail
    assert holder.current is serving
    assert holder.last_refusal["version"] == "v0002" and counts.failures("v0002", "RegistryError") == 1
    assert watcher.check().action == "unchanged"
    assert counts.failures("v0002", "RegistryError") == 1  # not retried at every poll

    promote(registry, tiny_exports["b"])  # v0003, intact
    assert watcher.check().action == "swapped" and holder.current.version == "v0003"
    assert holder.last_refusal is None


def test_a_version_whose_graph_does_not_load_is_refused(watched, tiny_exports, tmp_path):
    registry, holder, counts, watcher = watched
    broken = tmp_path / "broken-onnx"
    import shutil

    shutil.copytree(tiny_exports["a"], broken)
    (broken / "d32" / "model.onnx").write_bytes(b"not an onnx graph")  # consistent manifest, unloadable graph
    promote(registry, broken)
    outcome = watcher.check()
    assert outcome.action == "refused" and "ModelLoadError" in outcome.detail
    assert holder.current is None and "the champion v0001 could not be loaded" in holder.not_ready_reason
    assert counts.failures("v0001", "ModelLoadError") == 1


def test_an_unreadable_champion_pointer_keeps_the_current_model(watched, tiny_exports):
    registry, holder, counts, watcher = watched
    promote(registry, tiny_exports["a"])
    watcher.check()
    registry.champion_path.write_text("{not json")
    assert watcher.check().action == "refused" and holder.current.version == "v0001"


def test_in_flight_requests_finish_on_the_model_they_started_with(models):
    old, new = models["a"], models["b"]
    holder = ModelHolder()
    holder.swap(old)

    async def scenario():
        batcher = MicroBatcher(max_batch_size=32, max_delay_s=0.2)
        batcher.start()
        try:
            started = holder.current  # what a request takes when it starts
            pending = asyncio.ensure_future(batcher.embed(started, TEXTS))
            await asyncio.sleep(0.05)  # the request waits for its batch...
            holder.swap(new)  # ...while a promotion lands
            after = await batcher.embed(holder.current, TEXTS)
            return await pending, after
        finally:
            await batcher.stop()

    during, after = asyncio.run(scenario())
    np.testing.assert_allclose(during, old.embedder.embed(TEXTS), atol=1e-6)
    np.testing.assert_allclose(after, new.embedder.embed(TEXTS), atol=1e-6)


def test_batches_group_concurrent_requests_but_never_mix_versions(models):
    model_a, model_b = models["a"], models["b"]
    runs: list[tuple[str, int]] = []

    class Recorder(MicroBatcher):
        def _embed(self, model, texts):
            runs.append((model.version, len(texts)))
            return super()._embed(model, texts)

    async def scenario():
        batcher = Recorder(max_batch_size=8, max_delay_s=0.1)
        batcher.start()
        try:
            jobs = [batcher.embed(model_a if i % 4 else model_b, [f"text {i}"]) for i in range(12)]
            jobs.append(batcher.embed(model_a, [f"long request {i}" for i in range(20)]))
            return await asyncio.gather(*jobs)
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    for i in range(12):
        model = model_a if i % 4 else model_b
        np.testing.assert_allclose(results[i], model.embedder.embed([f"text {i}"]), atol=1e-6)
    np.testing.assert_allclose(
        results[12], model_a.embedder.embed([f"long request {i}" for i in range(20)]), atol=1e-6
    )
    assert list(runs), "nothing to check: runs is empty"
    assert all(size <= 8 for _, size in runs)
    assert sum(size for version, size in runs if version == "v0002") == 3  # b: i = 0, 4, 8
    assert sum(size for version, size in runs if version == "v0001") == 9 + 20
    assert len(runs) < 12 + 3  # concurrent single-text requests shared runs


@pytest.mark.integration
def test_end_to_end_through_embedgate_serve(tmp_path, tiny_exports, models):
    registry = Registry(tmp_path / "registry")
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "gates.cli",
        "serve",
        "--registry",
        str(registry.root),
        "--port",
        str(port),
        "--poll-interval",
        "0.3",
    ]
    with ServerProcess({}, tmp_path / "server.log", port=port, argv=argv) as server:
        url = server.base_url

        def embed() -> httpx.Response:
            return httpx.post(f"{url}/v1/embeddings", json={"input": TEXTS}, timeout=30)

        def serving(version: str) -> bool:
            return embed().headers.get(HEADER) == version

        # No champion: live but not ready, model routes 503 with the reason.
        ready = httpx.get(f"{url}/ready")
        assert ready.status_code == 503 and ready.json()["error"]["code"] == "model_not_ready"
        assert "no champion in the registry" in ready.json()["error"]["message"]
        response = embed()
        assert response.status_code == 503 and response.headers[HEADER] == "none"
        assert httpx.get(f"{url}/readyz").status_code == 503

        promote(registry, tiny_exports["a"])
        server.wait_for(lambda: httpx.get(f"{url}/ready").status_code == 200, what="the first champion")
        reference_a = models["a"].embedder.embed(TEXTS, dimensions=TINY_SERVING_DIM)
        np.testing.assert_allclose(_vectors(embed()), reference_a, atol=1e-5)

        promote(registry, tiny_exports["b"], make_champion=False)
        _corrupt_graph(registry, "v0002")
        point_champion(registry, "v0002", previous="v0001")
        server.wait_for(
            lambda: (
                metric_value(
                    httpx.get(f"{url}/metrics").text, "embedgate_model_swap_failures_total", version="v0002"
                )
                == 1
            ),
            what="the refusal of v0002",
        )
        response = embed()
        assert response.headers.get_list(HEADER) == ["v0001"]
        np.testing.assert_allclose(_vectors(response), reference_a, atol=1e-5)
        info = httpx.get(f"{url}/info").json()
        assert info["last_refused_version"]["version"] == "v0002"
        assert "sha256 does not match" in info["last_refused_version"]["reason"]
        assert "refused champion v0002" in server.log() and "still serving v0001" in server.log()

        promote(registry, tiny_exports["b"])  # v0003, intact
        server.wait_for(lambda: serving("v0003"), what="v0003")
        reference_b = models["b"].embedder.embed(TEXTS, dimensions=TINY_SERVING_DIM)
        np.testing.assert_allclose(_vectors(embed()), reference_b, atol=1e-5)

        registry.rollback(who="tests", reason="roll back", to="v0001")
        server.wait_for(lambda: serving("v0001"), what="the rollback to v0001")
        metrics = httpx.get(f"{url}/metrics").text
        assert metric_value(metrics, "embedgate_model_swaps_total", version="v0001") == 2
        assert metric_value(metrics, "embedgate_model_swaps_total", version="v0003") == 1
        assert metric_value(metrics, "embedgate_model_info", version="v0001") == 1
        assert metric_value(metrics, "embedgate_model_info", version="v0003") == 0


def _vectors(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array([row["embedding"] for row in response.json()["data"]], dtype=np.float32)
