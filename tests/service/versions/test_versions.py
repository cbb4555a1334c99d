"""Several versions served at once (service/versions/version_pool.py): pinned clients keep their vectors through a staged
promotion and a cutover, aliases switch once, unknown/retired versions are 404 with the list, on-demand versions are
evicted least-recently-used within the memory bound and reload on demand. The runtime and the routes are the real
ones, driven in-process through ASGI (the real-server path is covered by test_api_server.py)."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest

from service.api.routes import create_http_app
from service.model.embedder import OnnxEmbedder
from service.registry.aliases import cutover, read_state, retire, set_candidate
from service.registry.registry import Registry
from service.runtime import ServingRuntime
from service.settings import ServeSettings
from tests.service.serving import (
    TINY_SERVING_DIM,
    promote,
)

HEADER = "x-embedgate-model-version"
TEXTS = ["heart blood pressure", "the tenant pays rent", "a child with a fever"]


async def _serve(runtime: ServingRuntime, scenario):
    """Run `scenario(client)` against the real routes with the runtime's background work started and stopped."""
    await runtime.start()
    try:
        transport = httpx.ASGITransport(app=create_http_app(lambda: runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://embedgate.test") as client:
            return await scenario(client)
    finally:
        await runtime.stop()


def _vectors(response: httpx.Response) -> np.ndarray:
    return np.array([row["embedding"] for row in response.json()["data"]], dtype=np.float32)


@pytest.fixture()
def registry(tmp_path) -> Registry:
    return Registry(tmp_path / "registry")


@pytest.fixture(scope="module")
def references(tiny_exports) -> dict[str, np.ndarray]:
    return {
        name: OnnxEmbedder.from_export_dir(tiny_exports[name]).embed(TEXTS, dimensions=TINY_SERVING_DIM)
        for name in ("a", "b")
    }


def _metrics():
    """A private Prometheus registry per runtime (the default one takes each metric name once per process)."""
    from prometheus_client import CollectorRegistry

    from service.api.metrics import ServiceMetrics

    return ServiceMetrics(CollectorRegistry())


def test_pinned_clients_keep_their_vectors_through_a_staged_promotion_and_a_cutover(
    registry, tiny_exports, references
):
    promote(registry, tiny_exports["a"])  # v0001, the champion
    runtime = ServingRuntime.create(
        ServeSettings(registry=registry.root, poll_interval_s=0.05, threads=1, max_batch_delay_ms=0.0),
        metrics=_metrics(),
        drift=None,
        registry_chosen=True,
    )
    results: dict[str, list] = {"pinned": [], "alias": [], "failed": []}

    async def client_loop(client, name, body, stop):
        while not stop.is_set():
            response = await client.post("/v1/embeddings", json={"input": TEXTS, **body})
            if response.status_code != 200:
                results["failed"].append((name, response.status_code, response.text))
            else:
                results[name].append((response.headers[HEADER], response.json()["model"], _vectors(response)))
            await asyncio.sleep(0)

    async def scenario(client):
        stop = asyncio.Event()
        loops = [
            asyncio.ensure_future(client_loop(client, "pinned", {"model": "v0001"}, stop)) for _ in range(3)
        ]
        loops += [asyncio.ensure_future(client_loop(client, "alias", {}, stop)) for _ in range(3)]
        await asyncio.sleep(0.5)
        staged = await asyncio.to_thread(promote, registry, tiny_exports["b"], make_champion=False)
        await asyncio.to_thread(set_candidate, registry, staged)
        await asyncio.sleep(0.5)  # several polls: the champion must not move on a staged promotion
        candidate = await client.post("/embed", json={"inputs": TEXTS, "model": "candidate"})
        before_cutover = len(results["alias"])
        await asyncio.to_thread(cutover, registry, staged, who="tests")
        await asyncio.sleep(0.8)
        stop.set()
        await asyncio.gather(*loops)
        return staged, candidate, before_cutover

    staged, candidate, before_cutover = asyncio.run(_serve(runtime, scenario))
    assert staged == "v0002"
    assert not results["failed"], results["failed"][:3]
    assert len(results["pinned"]) > 10 and len(results["alias"]) > 10
    for version, model, vectors in results["pinned"]:
        assert (version, model) == ("v0001", "embedgate-embedder:v0001")
        np.testing.assert_allclose(vectors, references["a"], atol=1e-5)
    assert candidate.status_code == 200 and candidate.headers[HEADER] == "v0002"
    np.testing.assert_allclose(np.array(candidate.json()), references["b"], atol=1e-5)
    alias_versions = [version for version, _, _ in results["alias"]]
    assert set(alias_versions[:before_cutover]) == {"v0001"}  # untouched by the staged promotion
    switch = alias_versions.index("v0002")
    assert set(alias_versions[switch:]) == {"v0002"}, "the alias switched back and forth"
    for version, model, vectors in results["alias"]:
        assert model == f"embedgate-embedder:{version}"
        np.testing.assert_allclose(vectors, references["a" if version == "v0001" else "b"], atol=1e-5)


def test_unknown_and_retired_versions_are_404_naming_what_can_be_asked_for(registry, tiny_exports):
    for name in ("a", "b", "a"):
        promote(registry, tiny_exports[name])
    retire(registry, "v0001", who="tests")
    runtime = ServingRuntime.create(
        ServeSettings(registry=registry.root, threads=1), metrics=_metrics(), drift=None, registry_chosen=True
    )

    async def scenario(client):
        answers = {}
        for model in ("v0009", "v0001", "gpt-4", "candidate"):
            answers[model] = await client.post("/v1/embeddings", json={"input": "heart", "model": model})
        answers["embed"] = await client.post("/embed", json={"inputs": "heart", "model": "v0009"})
        answers["models"] = await client.get("/v1/models")
        answers["pinned"] = await client.post(
            "/embed", json={"inputs": "heart", "model": "embedgate-embedder:v0002"}
        )
        return answers

    answers = asyncio.run(_serve(runtime, scenario))
    for key in ("v0009", "v0001", "gpt-4", "candidate", "embed"):
        response = answers[key]
        error = response.json()["error"]
        assert (
            response.status_code == 404 and error["code"] == "model_not_found" and error["param"] == "model"
        )
        assert "'champion', 'v0002', 'v0003'" in error["message"], error["message"]
    assert "v0001 was retired" in answers["v0001"].json()["error"]["message"]
    assert "no version is staged as the candidate" in answers["candidate"].json()["error"]["message"]
    assert answers["pinned"].status_code == 200 and answers["pinned"].headers[HEADER] == "v0002"
    listed = {row["id"]: row for row in answers["models"].json()["data"]}
    assert list(listed) == ["embedgate-embedder", "champion", "v0002", "v0003"]
    assert listed["champion"]["version"] == "v0003" and listed["v0002"]["loaded"] is True


def test_on_demand_versions_stay_within_the_memory_bound_and_reload_after_eviction(
    registry, tiny_exports, references
):
    for name in ("a", "b", "a"):
        promote(registry, tiny_exports[name])  # v0003 is the champion; v0001 and v0002 load on demand
    graph = max(path.stat().st_size for path in (registry.version_dir("v0001") / "onnx").rglob("*.onnx"))
    runtime = ServingRuntime.create(
        ServeSettings(
            registry=registry.root, threads=1, keep_versions=0, on_demand_memory_mb=1.5 * graph / 2**20
        ),  # room for one on-demand version, not two
        metrics=_metrics(),
        drift=None,
        registry_chosen=True,
    )
    pool = runtime.versions
    assert pool.loaded() == ["v0003"]

    async def scenario(client):
        seen = []
        for model in ("v0001", "v0002", "v0001"):
            response = await client.post("/v1/embeddings", json={"input": TEXTS, "model": model})
            seen.append(
                (response.status_code, response.headers[HEADER], _vectors(response), sorted(pool.loaded()))
            )
        return seen

    seen = asyncio.run(_serve(runtime, scenario))
    assert [(status, version, loaded) for status, version, _, loaded in seen] == [
        (200, "v0001", ["v0001", "v0003"]),
        (200, "v0002", ["v0002", "v0003"]),
        (200, "v0001", ["v0001", "v0003"]),
    ]
    np.testing.assert_allclose(seen[0][2], references["a"], atol=1e-5)
    np.testing.assert_allclose(seen[1][2], references["b"], atol=1e-5)
    np.testing.assert_array_equal(seen[0][2], seen[2][2])  # reloaded after eviction: the same vectors


def test_keep_versions_preloads_the_newest_and_a_retired_one_is_unloaded(registry, tiny_exports):
    for name in ("a", "b", "a", "b"):
        promote(registry, tiny_exports[name])
    runtime = ServingRuntime.create(
        ServeSettings(registry=registry.root, threads=1, keep_versions=2),
        metrics=_metrics(),
        drift=None,
        registry_chosen=True,
    )
    pool = runtime.versions
    assert sorted(pool.loaded()) == ["v0003", "v0004"] and pool.pinned() == {"v0003", "v0004"}
    retire(registry, "v0003", who="tests")
    pool.refresh()
    assert sorted(pool.loaded()) == ["v0002", "v0004"]  # v0002 is now among the two newest servable
    assert read_state(registry).retired == ("v0003",)
    history = [json.loads(line)["action"] for line in registry.history_path.read_text().splitlines()]
    assert history[-1] == "retire"


def test_a_version_refused_at_its_switch_is_never_served_listed_preloaded_or_cut_over_to(
    registry, tiny_exports, monkeypatch
):
    """A promotion that loses the champion's compare-and-swap (object storage: another writer switched first)
    leaves its version stored and recorded as refused: it must answer 404, be absent from /v1/models, never be
    preloaded (keep_versions), and cutover/rollback must not make it the champion."""
    from service.errors import RegistryError
    from service.registry.registry import ChampionChanged, champion_changed_message

    promote(registry, tiny_exports["a"])  # v0001, the champion

    def lose_the_race(self, version, previous):
        raise ChampionChanged(champion_changed_message(previous, self.champion()))

    monkeypatch.setattr(Registry, "_switch", lose_the_race)
    with pytest.raises(ChampionChanged):
        promote(registry, tiny_exports["b"], run_id="loser")
    monkeypatch.undo()
    assert registry.versions() == ["v0001", "v0002"] and registry.history()[-1].action == "refused"
    state = read_state(registry)
    assert state.servable == ("v0001",) and state.never_served == ("v0002",)
    runtime = ServingRuntime.create(
        ServeSettings(registry=registry.root, threads=1, keep_versions=3),
        metrics=_metrics(),
        drift=None,
        registry_chosen=True,
    )
    assert runtime.versions.loaded() == ["v0001"]

    async def scenario(client):
        return (
            await client.post("/v1/embeddings", json={"input": "heart", "model": "v0002"}),
            await client.get("/v1/models"),
        )

    refused, models = asyncio.run(_serve(runtime, scenario))
    assert refused.status_code == 404
    assert "v0002 was refused at its promotion" in refused.json()["error"]["message"]
    assert "v0002" not in [row["id"] for row in models.json()["data"]]
    assert "v0002" not in runtime.versions.loaded()
    with pytest.raises(RegistryError, match="cannot cut over to v0002: v0002 was refused"):
        cutover(registry, "v0002", who="tests")
    with pytest.raises(RegistryError, match="cannot roll back to v0002: v0002 was refused"):
        registry.rollback(to="v0002", who="tests")
    assert registry.champion().version == "v0001"
