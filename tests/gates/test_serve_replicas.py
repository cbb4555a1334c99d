"""Two `embedgate serve` replicas on one host (issue 31 item 4): each /metrics counts its own traffic only.

BentoML gives every server on a host one Prometheus multiprocess folder ($BENTOML_HOME/prometheus_multiproc_dir)
and wipes it when a server starts: three replicas that answered about 3,450 texts each all reported 10,353.
`embedgate serve` gives each replica a folder of its own. Real processes: two servers over one registry with the
tiny model, the second started while the first already holds counts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from gates.serve_process import METRICS_DIR_PREFIX
from service.registry.registry import Registry
from tests.service.serving import ServerProcess, free_port, metric_value, promote

pytestmark = pytest.mark.integration


def _replica(registry: Registry, tmp_path: Path, name: str, workers: int) -> ServerProcess:
    port = free_port()
    argv = [sys.executable, "-m", "gates.cli", "serve", "--registry", str(registry.root), "--port", str(port)]
    env = {
        "EMBEDGATE_DRIFT_SAMPLE_RATE": "1",
        "EMBEDGATE_DRIFT_DIR": str(tmp_path / "drift"),  # one drift folder for both, as replicas share it
        "EMBEDGATE_DRIFT_MONITOR": "false",
    }
    argv += ["--workers", str(workers)]
    return ServerProcess(env, tmp_path / f"{name}.log", port=port, argv=argv)


def _send(server: ServerProcess, requests: int, texts_each: int) -> None:
    for i in range(requests):
        texts = [f"the tenant pays rent {i} {j}" for j in range(texts_each)]
        answer = httpx.post(f"{server.base_url}/v1/embeddings", json={"input": texts}, timeout=30)
        assert answer.status_code == 200, answer.text


def _counts(server: ServerProcess) -> tuple[float, float]:
    """(texts embedded, texts offered to the drift capture) as the replica's /metrics reports them."""
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    return metric_value(text, "embedgate_inputs_total"), metric_value(
        text, "embedgate_drift_capture_offered_total"
    )


def _metrics_dirs(server: ServerProcess) -> set[str]:
    """PROMETHEUS_MULTIPROC_DIR of the server's worker processes."""
    found = set()
    for process in psutil.Process(server.process.pid).children(recursive=True):
        with_dir = process.environ().get("PROMETHEUS_MULTIPROC_DIR")
        if with_dir and "_bentoml_impl.worker" in " ".join(process.cmdline()):
            found.add(with_dir)
    return found


def test_two_replicas_on_one_host_each_count_their_own_texts(tmp_path, tiny_exports):
    registry = Registry(tmp_path / "registry")
    promote(registry, tiny_exports["a"])
    shared = Path(os.environ["BENTOML_HOME"]) / "prometheus_multiproc_dir"  # what bentoml alone would use
    with _replica(registry, tmp_path, "a", workers=2) as a:
        a.wait_for(lambda: httpx.get(f"{a.base_url}/ready").status_code == 200, what="replica a /ready")
        _send(a, requests=6, texts_each=3)
        assert _counts(a) == (18, 18)
        with _replica(registry, tmp_path, "b", workers=1) as b:  # starting b must not wipe a's counts
            b.wait_for(lambda: httpx.get(f"{b.base_url}/ready").status_code == 200, what="replica b /ready")
            _send(b, requests=5, texts_each=2)
            _send(a, requests=4, texts_each=1)
            assert _counts(a) == (22, 22), a.log()[-2000:]  # both of a's workers, none of b's texts
            assert _counts(b) == (10, 10), b.log()[-2000:]
            dirs_a, dirs_b = _metrics_dirs(a), _metrics_dirs(b)
            assert len(dirs_a) == 1 and len(dirs_b) == 1 and dirs_a != dirs_b, (dirs_a, dirs_b)
            for folder in dirs_a | dirs_b:
                assert Path(folder).name.startswith(METRICS_DIR_PREFIX) and Path(folder) != shared
        assert _counts(a) == (22, 22)  # b's stop left a's counts alone too
    assert not any(
        Path(folder).exists() for folder in dirs_a | dirs_b
    )  # each removed when its server stopped
