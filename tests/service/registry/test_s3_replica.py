"""Three serving replicas on one S3 registry (moto on 127.0.0.1), under load, and a promotion: each serves from its
own verified local cache, every replica is on the new version within the poll interval (+ the load time), no
request fails, and /info says which version each serves and when it last checked. Each replica downloads only
the graph it serves, not the version's other dims and precisions (issue 31, item 3)."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from service.registry.registry import Registry
from tests.service.serving import TINY_DIMS, ServerProcess, free_port, promote

pytestmark = pytest.mark.integration
HEADER = "x-embedgate-model-version"
REPLICAS = 3


def test_three_replicas_on_the_s3_registry_follow_a_promotion_under_load(
    tmp_path, tiny_exports, s3_registry_url, s3_env
):
    registry = Registry(s3_registry_url)
    promote(registry, tiny_exports["a"])
    with contextlib.ExitStack() as stack:
        servers = []
        for i in range(REPLICAS):
            port = free_port()
            argv = [
                sys.executable,
                "-m",
                "gates.cli",
                "serve",
                "--registry",
                s3_registry_url,
                "--port",
                str(port),
                "--poll-interval",
                "0.5",
            ]
            env = {**s3_env, "EMBEDGATE_REGISTRY_CACHE": str(tmp_path / f"cache-{i}")}
            servers.append(
                stack.enter_context(ServerProcess(env, tmp_path / f"replica-{i}.log", port=port, argv=argv))
            )
        for server in servers:
            server.wait_for(
                lambda s=server: httpx.get(f"{s.base_url}/ready").status_code == 200, what="ready"
            )
            info = httpx.get(f"{server.base_url}/info").json()
            assert info["replica"]["serving_version"] == "v0001" and info["replica"]["last_checked_at"]
        for i in range(
            REPLICAS
        ):  # each replica verified its own copy of the one graph it serves (fp32, full dim)
            assert list((tmp_path / f"cache-{i}").glob("*/versions/v0001/manifest.json"))
            assert _graphs(tmp_path / f"cache-{i}", "v0001") == [f"d{TINY_DIMS[0]}/model.onnx"]

        failures, served, stop = [], {i: set() for i in range(REPLICAS)}, threading.Event()

        def load(i: int) -> None:
            with httpx.Client(timeout=30) as client:
                while not stop.is_set():
                    response = client.post(f"{servers[i].base_url}/v1/embeddings", json={"input": ["a text"]})
                    if response.status_code != 200:
                        failures.append((i, response.status_code, response.text[:200]))
                    served[i].add(response.headers.get(HEADER))

        threads = [threading.Thread(target=load, args=(i,)) for i in range(REPLICAS)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1)
            promoted_at = time.monotonic()
            promote(registry, tiny_exports["b"], run_id="run-b")
            lags = {}
            while len(lags) < REPLICAS and time.monotonic() - promoted_at < 30:
                for i, server in enumerate(servers):
                    if (
                        i not in lags
                        and httpx.get(f"{server.base_url}/info").json()["replica"]["serving_version"]
                        == "v0002"
                    ):
                        lags[i] = time.monotonic() - promoted_at
                time.sleep(0.1)
            time.sleep(0.5)  # requests keep flowing on the new version
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        assert len(lags) == REPLICAS, (lags, [s.log()[-2000:] for s in servers])
        assert failures == [], failures[:5]
        assert all(served[i] == {"v0001", "v0002"} for i in served), served
        assert max(lags.values()) < 15, (
            lags
        )  # poll interval 0.5 s + download, verify and load on a busy machine
        for i in range(REPLICAS):
            assert _graphs(tmp_path / f"cache-{i}", "v0002") == [f"d{TINY_DIMS[0]}/model.onnx"]


def _graphs(cache: Path, version: str) -> list[str]:
    """The graphs a replica's cache holds for `version` (a version has one per exported dim and precision)."""
    return sorted(
        p.relative_to(p.parents[1]).as_posix() for p in cache.glob(f"*/versions/{version}/onnx/*/*.onnx")
    )
