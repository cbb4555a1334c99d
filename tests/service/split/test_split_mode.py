"""Split mode (issue 26 part 2): `embedgate serve --http-workers N` starts HTTP workers apart from one model process
(service/split/app.py). Started for real beside the single-process service on the same registry, it must answer
byte for byte the same, errors included, and count what it served in /metrics."""

from __future__ import annotations

import json

import httpx
import psutil
import pytest

from gates.serve_process import SPLIT_SERVICE, serve_command
from service.registry.registry import Registry
from service.settings import SettingsError
from tests.service.serving import ServerProcess, free_port, metric_value, promote

API_KEY = "split-mode-test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
LONG_TEXT = "the tenant pays the rent on the first day of every month " * 90  # > 4096 chars: its own path

REQUESTS = [
    ("/v1/embeddings", {"input": "the tenant pays rent"}),
    ("/v1/embeddings", {"input": ["a child with a fever", "who pays the deposit?"], "dimensions": 8}),
    ("/v1/embeddings", {"input": ["heart blood pressure"], "encoding_format": "base64", "dimensions": 32}),
    ("/v1/embeddings", {"input": "pinned", "model": "v0001"}),
    ("/v1/embeddings", {"input": [LONG_TEXT, "short"]}),
    ("/embed", {"inputs": ["the tenant pays rent", "fever"], "dimensions": 16}),
    ("/v1/embeddings", {"input": "a", "dimensions": 7}),  # 422 unsupported_dimensions
    ("/v1/embeddings", {"input": "a", "model": "v0042"}),  # 404 model_not_found
]


@pytest.fixture(scope="module")
def servers(tmp_path_factory, tiny_exports):
    root = tmp_path_factory.mktemp("split")
    registry = Registry(root / "registry")
    promote(registry, tiny_exports["a"])
    common = {"EMBEDGATE_REGISTRY": str(registry.root), "EMBEDGATE_DRIFT_SAMPLE_RATE": "0", "KEY": API_KEY}
    port = free_port()
    argv, env = serve_command(
        registry=registry.root,
        host="127.0.0.1",
        port=port,
        api_key_env="KEY",
        workers=1,
        precision=None,
        threads=None,
        poll_interval=None,
        environ={**common},
        http_workers=2,
    )
    assert SPLIT_SERVICE in argv
    single_env = {**common, "EMBEDGATE_API_KEY": API_KEY}
    with (
        ServerProcess(single_env, root / "single.log") as single,
        ServerProcess(env, root / "split.log", port=port, argv=argv, startup_timeout_s=180) as split,
    ):
        for server in (single, split):
            server.wait_for(
                lambda server=server: httpx.get(f"{server.base_url}/ready").status_code == 200,
                timeout_s=120,
                what="/ready",
            )
        yield single, split


def _post(server: ServerProcess, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", content=json.dumps(body), headers=AUTH, timeout=60)


def test_split_mode_answers_byte_for_byte_as_the_single_process(servers):
    single, split = servers
    statuses = []
    for path, body in REQUESTS:
        expected, got = _post(single, path, body), _post(split, path, body)
        assert got.status_code == expected.status_code, (path, body, got.text[:300])
        assert got.content == expected.content, (path, body)
        assert got.headers["x-embedgate-model-version"] == expected.headers["x-embedgate-model-version"]
        statuses.append(got.status_code)
    assert statuses.count(200) == 6 and 422 in statuses and 404 in statuses  # both paths and errors compared


def test_split_mode_counts_in_metrics_and_runs_the_model_in_its_own_process(servers):
    _, split = servers
    before = httpx.get(f"{split.base_url}/metrics", headers=AUTH).text
    for _ in range(3):
        assert _post(split, "/v1/embeddings", {"input": ["one", "two"]}).status_code == 200
    after = httpx.get(f"{split.base_url}/metrics", headers=AUTH).text

    def delta(name, **labels):
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert delta("embedgate_inputs_total", route="/v1/embeddings") == 6  # counted by the HTTP workers
    assert delta("embedgate_batch_size_sum") == 6  # run by the model process's batcher
    workers = [
        " ".join(child.cmdline()) for child in psutil.Process(split.process.pid).children(recursive=True)
    ]
    assert sum("--service-name embedgate_http" in line for line in workers) == 2, workers  # --http-workers 2
    assert sum("--service-name embedgate_model" in line for line in workers) == 1, workers


def test_split_mode_refuses_several_model_workers():
    with pytest.raises(SettingsError, match="--http-workers 2 with --workers 2"):
        serve_command(
            registry=None,
            host="127.0.0.1",
            port=3000,
            api_key_env=None,
            workers=2,
            precision=None,
            threads=None,
            poll_interval=None,
            environ={},
            http_workers=2,
        )
