"""A serving replica on an S3 registry (moto on 127.0.0.1): serves from its verified local cache, hot-swaps on a
promotion within the poll interval, and says in /info which version it serves and when it last checked."""

from __future__ import annotations

import sys
import time

import httpx
import pytest

from service.registry import Registry
from tests.service.serving import ServerProcess, free_port, promote

pytestmark = pytest.mark.integration
HEADER = "x-embedgate-model-version"


def test_a_replica_on_the_s3_registry_follows_a_promotion(tmp_path, tiny_exports, s3_registry_url, s3_env):
    registry = Registry(s3_registry_url)
    promote(registry, tiny_exports["a"])
    port = free_port()
    cache = tmp_path / "replica-cache"
    argv = [sys.executable, "-m", "gates.cli", "serve", "--registry", s3_registry_url, "--port", str(port),
            "--poll-interval", "0.3"]
    with ServerProcess({**s3_env, "EMBEDGATE_REGISTRY_CACHE": str(cache)}, tmp_path / "replica.log", port=port,
                       argv=argv) as server:
        url = server.base_url
        server.wait_for(lambda: httpx.get(f"{url}/ready").status_code == 200, what="the first champion")
        info = httpx.get(f"{url}/info").json()
        assert info["replica"]["serving_version"] == "v0001" and info["source"].endswith(s3_registry_url)
        first_check = info["replica"]["last_checked_at"]
        assert first_check is not None
        assert list((cache).glob("*/versions/v0001/manifest.json"))  # served from the verified local cache

        promoted_at = time.monotonic()
        promote(registry, tiny_exports["b"], run_id="run-b")
        failures = 0
        while time.monotonic() - promoted_at < 30:
            response = httpx.post(f"{url}/v1/embeddings", json={"input": ["a text"]}, timeout=30)
            failures += response.status_code != 200
            if response.headers.get(HEADER) == "v0002":
                break
        lag = time.monotonic() - promoted_at
        assert response.headers.get(HEADER) == "v0002", server.log()[-3000:]
        assert failures == 0 and lag < 15, (failures, lag)
        info = httpx.get(f"{url}/info").json()
        assert info["replica"]["serving_version"] == "v0002"
        assert info["replica"]["last_checked_at"] >= first_check
