"""The deployment path: `embedgate build-bento` (the champion saved to BentoML's model store, built offline), and the built
Bento served with no registry at all (it must serve the model it carries). A private BENTOML_HOME keeps the
user's store untouched."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import httpx
import numpy as np
import pytest

from service.model.embedder import OnnxEmbedder
from service.registry.registry import Registry
from tests.service.serving import (
    REPO_ROOT,
    TINY_SERVING_DIM,
    ServerProcess,
    promote,
)

pytestmark = pytest.mark.integration

# Packages that must never reach the served image (GUIDE: the service ships without torch).
HEAVY = re.compile(
    r"^(torch|transformers|sentence-transformers|sentence_transformers|optimum)\b", re.I | re.M
)


def _run(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


def test_a_built_bento_carries_and_serves_its_model_without_torch(tmp_path, tiny_exports):
    import os

    registry = Registry(tmp_path / "registry")
    assert promote(registry, tiny_exports["a"]) == "v0001"
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    # `embedgate build-bento` saves the champion to the store under the registry's own name and packs that tag.
    out = _run(["-m", "gates.cli", "build-bento", "--registry", str(registry.root)], env)
    tag = out.split()[1].rstrip(":")
    assert tag.startswith("embedgate:"), tag
    bento_dir = tmp_path / "bentoml" / "bentos" / "embedgate" / tag.split(":")[1]
    requirements = (bento_dir / "env" / "python" / "requirements.txt").read_text()
    assert "onnxruntime==" in requirements and not HEAVY.findall(requirements)
    bento_yaml = (bento_dir / "bento.yaml").read_text()
    assert re.search(
        r"embedgate-embedder-[0-9a-f]{10}:v0001-", bento_yaml
    )  # registry id, version, manifest hash
    packed = {path.name for path in (bento_dir / "src" / "service").rglob("*.py")}
    assert {"app.py", "routes.py", "embedder.py", "capture.py"} <= packed

    serve_dir = tmp_path / "elsewhere"  # no registry/ here, and EMBEDGATE_REGISTRY unset
    serve_dir.mkdir()
    env = {key: value for key, value in env.items() if key != "EMBEDGATE_REGISTRY"}
    argv = [sys.executable, "-m", "bentoml", "serve", tag, "--host", "127.0.0.1"]
    server = ServerProcess(
        {**env, "EMBEDGATE_DRIFT_SAMPLE_RATE": "0"}, tmp_path / "server.log", cwd=serve_dir, argv=argv
    )
    server.argv += ["--port", str(server.port)]
    with server:
        info = httpx.get(f"{server.base_url}/info").json()
        assert info["source"] == "bentoml-model-store:embedgate-embedder:latest"
        assert re.match(
            r"bentoml-model-store:embedgate-embedder-[0-9a-f]{10}:v0001-", info["model"]["source"]
        )
        response = httpx.post(f"{server.base_url}/v1/embeddings", json={"input": ["heart", "the lease"]})
        assert response.status_code == 200 and response.headers["x-embedgate-model-version"] == "v0001"
        vectors = np.array([row["embedding"] for row in response.json()["data"]], dtype=np.float32)
        expected = OnnxEmbedder.from_export_dir(tiny_exports["a"]).embed(
            ["heart", "the lease"], dimensions=TINY_SERVING_DIM
        )
        np.testing.assert_allclose(vectors, expected, atol=1e-5)


SERVED_MODULES = (  # paths under service/
    "app",
    "api/routes",
    "runtime",
    "versions/hot_swap",
    "batching/batcher",
    "model/serving_model",
    "versions/model_store",
    "settings",
    "api/request_bodies",
    "api/response_bodies",
    "api/errors",
    "api/auth",
    "api/limits",
    "api/metrics",
)


def test_the_served_process_imports_no_torch_and_loads_no_pickles(tmp_path, tiny_exports):
    """Build the whole runtime the way the BentoML worker does and list what got imported."""
    import os

    registry = Registry(tmp_path / "registry")
    promote(registry, tiny_exports["a"])
    code = (
        "import sys, json; import service.app; from service.runtime import ServingRuntime; "
        "from service.settings import ServeSettings; "
        "runtime = ServingRuntime.create(ServeSettings.from_env(), drift=None); "
        "assert runtime.model is not None, runtime.holder.not_ready_reason; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'transformers', 'sentence_transformers', 'training', 'gates'))))"
    )
    env = {**os.environ, "EMBEDGATE_REGISTRY": str(registry.root), "BENTOML_DO_NOT_TRACK": "true"}
    imported = _run(["-c", code], env).strip().splitlines()[-1]
    heavy = json.loads(imported)
    assert heavy == [], f"the served process imported {heavy}"
    for module in SERVED_MODULES:  # our serving code never unpickles or runs model code
        source = (REPO_ROOT / "service" / f"{module}.py").read_text()
        assert not re.search(r"\bpickle\b|allow_pickle|trust_remote_code|import torch", source), module
