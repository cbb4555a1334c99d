"""Load with a promotion in the middle: 32 concurrent clients for EMBEDGATE_LOAD_TEST_SECONDS (default 60) against
`bentoml serve` on loopback. Every request must succeed, carry exactly one model-version header, and hold that
version's vectors; p50/p99 are printed.

    EMBEDGATE_LOAD_TEST_SECONDS=20 pytest tests/service/api/test_load.py -m slow -s
"""

from __future__ import annotations

import asyncio
import os
import random
import time

import numpy as np
import pytest

from service.model.embedder import OnnxEmbedder
from service.registry.registry import Registry
from tests.service.serving import (
    TINY_DIMS,
    TINY_SERVING_DIM,
    ServerProcess,
    promote,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CLIENTS = 32
HEADER = "x-embedgate-model-version"
POOL = [
    f"{subject} {verb} {detail}"
    for subject in ("the patient", "the tenant", "a child", "the court")
    for verb in ("needs", "pays", "asks about")
    for detail in ("the dose", "rent", "a fever at night")
]


def _duration_s() -> float:
    return float(os.environ.get("EMBEDGATE_LOAD_TEST_SECONDS", "60"))


def _expected(onnx_dir) -> dict[int, dict[str, np.ndarray]]:
    embedder = OnnxEmbedder.from_export_dir(onnx_dir)
    return {dim: dict(zip(POOL, embedder.embed(POOL, dimensions=dim), strict=True)) for dim in TINY_DIMS}


async def _client(session, url: str, stop_at: float, seed: int, results: list) -> None:
    rng = random.Random(seed)
    while time.monotonic() < stop_at:
        texts = rng.sample(POOL, rng.randint(1, 4))
        dims = rng.choice([None, *TINY_DIMS])
        body = {"input": texts, **({"dimensions": dims} if dims else {})}
        started = time.perf_counter()
        try:
            async with session.post(url, json=body) as response:
                payload = await response.json(content_type=None)
                results.append(
                    (
                        response.status,
                        response.headers.getall(HEADER, []),
                        texts,
                        dims or TINY_SERVING_DIM,
                        payload,
                        time.perf_counter() - started,
                    )
                )
        except Exception as err:  # a connection failure is a failed request, reported below
            results.append((None, [], texts, dims, repr(err), time.perf_counter() - started))


def test_32_clients_through_a_promotion_without_a_failed_request(tmp_path, tiny_exports, capsys):
    import aiohttp

    registry = Registry(tmp_path / "registry")
    promote(registry, tiny_exports["a"])
    expected = {"v0001": _expected(tiny_exports["a"]), "v0002": _expected(tiny_exports["b"])}
    duration = _duration_s()
    env = {
        "EMBEDGATE_REGISTRY": str(registry.root),
        "EMBEDGATE_POLL_INTERVAL_S": "0.5",
        "EMBEDGATE_DRIFT_SAMPLE_RATE": "0",
    }

    async def run(url: str) -> tuple[list, float]:
        results: list = []
        connector = aiohttp.TCPConnector(limit=CLIENTS)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            stop_at = time.monotonic() + duration
            clients = [
                asyncio.ensure_future(_client(session, url, stop_at, seed, results))
                for seed in range(CLIENTS)
            ]
            await asyncio.sleep(duration / 2)
            promoted_at = len(results)
            await asyncio.get_running_loop().run_in_executor(None, promote, registry, tiny_exports["b"])
            await asyncio.gather(*clients)
        return results, promoted_at

    with ServerProcess(env, tmp_path / "server.log") as server:
        results, promoted_at = asyncio.run(run(f"{server.base_url}/v1/embeddings"))

    failures = [r for r in results if r[0] != 200]
    assert not failures, f"{len(failures)} of {len(results)} requests failed, e.g. {failures[:3]}"
    versions_seen = []
    for _status, headers, texts, dims, payload, _latency in results:
        assert len(headers) == 1 and headers[0] in expected, headers
        version = headers[0]
        versions_seen.append(version)
        assert payload["model"] == f"embedgate-embedder:{version}"
        vectors = np.array([row["embedding"] for row in payload["data"]], dtype=np.float32)
        assert vectors.shape == (len(texts), dims)
        reference = np.stack([expected[version][dims][text] for text in texts])
        np.testing.assert_allclose(vectors, reference, atol=1e-5, err_msg=f"vectors are not {version}'s")
    assert versions_seen[:promoted_at].count("v0002") == 0
    assert versions_seen[-CLIENTS:] == ["v0002"] * CLIENTS  # the promotion was picked up
    latencies_ms = np.array([r[-1] for r in results]) * 1e3
    with capsys.disabled():
        print(
            f"\nload: {CLIENTS} clients x {duration:.0f} s: {len(results)} requests, "
            f"{len(results) / duration:.0f} req/s, p50 {np.percentile(latencies_ms, 50):.1f} ms, "
            f"p99 {np.percentile(latencies_ms, 99):.1f} ms, 0 failed; v0001 {versions_seen.count('v0001')}, "
            f"v0002 {versions_seen.count('v0002')} (promoted after request {promoted_at}); "
            f"loadavg {os.getloadavg()[0]:.2f}"
        )
