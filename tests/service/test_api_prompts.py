"""A prompted model served for real (`bentoml serve`): input_type / prompt_name give exactly
SentenceTransformer.encode(text, prompt_name=...) truncated to the served dim and re-normalised."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from service.registry import Registry
from tests.prompted import QUERY_PROMPT
from tests.service.serving import ServerProcess, promote

pytestmark = pytest.mark.integration

SERVING_DIM = 16
TEXTS = ["what is the dose for a child", "the tenant pays rent"]


@pytest.fixture(scope="module")
def server(prompted_model_dir, tmp_path_factory):
    from training.export import export_run

    root = tmp_path_factory.mktemp("prompted-serving")
    export_run(prompted_model_dir, root / "onnx", dims=[32, SERVING_DIM], int8=False)
    registry = Registry(root / "registry")
    promote(registry, root / "onnx", serving_dim=SERVING_DIM)
    env = {"EMBEDGATE_REGISTRY": str(registry.root), "EMBEDGATE_DRIFT_SAMPLE_RATE": "0"}
    with ServerProcess(env, root / "server.log") as process:
        process.wait_for(lambda: httpx.get(f"{process.base_url}/ready").status_code == 200, what="/ready")
        yield process


def _post(server, path, body):
    return httpx.post(
        f"{server.base_url}{path}",
        content=json.dumps(body).encode(),
        timeout=30,
        headers={"Content-Type": "application/json"},
    )


def _openai(server, body) -> np.ndarray:
    response = _post(server, "/v1/embeddings", body)
    assert response.status_code == 200, response.text
    return np.array([row["embedding"] for row in response.json()["data"]], dtype=np.float32)


def _expected(model_dir, prompt_name):
    from sentence_transformers import SentenceTransformer

    full = SentenceTransformer(str(model_dir), device="cpu").encode(TEXTS, prompt_name=prompt_name)
    cut = full[:, :SERVING_DIM]
    return cut / np.linalg.norm(cut, axis=1, keepdims=True)


@pytest.mark.parametrize("role", ["query", "document"])
def test_input_type_equals_sentence_transformers_prompt_name(server, prompted_model_dir, role):
    expected = _expected(prompted_model_dir, role)
    served = _openai(server, {"input": TEXTS, "input_type": role})
    assert (served * expected).sum(axis=1).min() >= 0.9999
    native = _post(server, "/embed", {"inputs": TEXTS, "input_type": role})
    assert native.status_code == 200, native.text
    np.testing.assert_allclose(np.array(native.json(), dtype=np.float32), served, atol=1e-6)
    by_name = _post(server, "/embed", {"inputs": TEXTS, "prompt_name": role})  # TEI's field
    np.testing.assert_allclose(np.array(by_name.json(), dtype=np.float32), served, atol=1e-6)
    plain = _openai(server, {"input": TEXTS})  # no input_type: the text as sent, which differs
    assert (plain * expected).sum(axis=1).min() < 0.999


def test_a_client_that_adds_the_prompt_itself_gets_it_once(server):
    assert np.allclose(
        _openai(server, {"input": [QUERY_PROMPT + t for t in TEXTS], "input_type": "query"}),
        _openai(server, {"input": TEXTS, "input_type": "query"}),
        atol=1e-6,
    )


def test_unknown_input_type_and_prompt_name_are_422(server):
    response = _post(server, "/v1/embeddings", {"input": TEXTS, "input_type": "passage"})
    assert response.status_code == 422
    assert "allowed: ['query', 'document']" in response.json()["error"]["message"]
    response = _post(server, "/embed", {"inputs": TEXTS, "prompt_name": "classification"})
    assert response.status_code == 422
    assert "available: ['document', 'query']" in response.json()["error"]["message"]


def test_info_lists_the_prompts(server):
    model = httpx.get(f"{server.base_url}/info").json()["model"]
    assert model["prompts"] == {"query": QUERY_PROMPT, "document": "passage: "}
