"""A prompted model served for real (`bentoml serve`): input_type / prompt_name give exactly
SentenceTransformer.encode(text, prompt_name=...) truncated to the served dim and re-normalised, and so does a
role-suffixed model name (`embedgate-embedder:query`) for the clients that cannot send input_type: the openai
client as it is, LangChain's OpenAIEmbeddings and LlamaIndex's OpenAIEmbedding, each run as docs/serving.md shows."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from service.registry.registry import Registry
from tests.prompted import QUERY_PROMPT
from tests.service.serving import ServerProcess, promote

pytestmark = pytest.mark.integration

SERVING_DIM = 16
TEXTS = ["what is the dose for a child", "the tenant pays rent"]


@pytest.fixture(scope="module")
def registry(prompted_model_dir, tmp_path_factory) -> Registry:
    from training.export.export_run import export_run

    root = tmp_path_factory.mktemp("prompted-serving")
    export_run(prompted_model_dir, root / "onnx", dims=[32, SERVING_DIM], int8=False)
    registry = Registry(root / "registry")
    promote(registry, root / "onnx", serving_dim=SERVING_DIM)  # v0001, the champion
    return registry


@pytest.fixture(scope="module")
def server(registry):
    env = {"EMBEDGATE_REGISTRY": str(registry.root), "EMBEDGATE_DRIFT_SAMPLE_RATE": "0"}
    with ServerProcess(env, registry.root.parent / "server.log") as process:
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


def _expected(model_dir, prompt_name, texts=TEXTS):
    from sentence_transformers import SentenceTransformer

    full = SentenceTransformer(str(model_dir), device="cpu").encode(texts, prompt_name=prompt_name)
    cut = full[:, :SERVING_DIM]
    return cut / np.linalg.norm(cut, axis=1, keepdims=True)


def _same_directions(served, expected) -> bool:
    served = np.asarray(served, dtype=np.float32).reshape(len(expected), -1)
    return bool((served * expected).sum(axis=1).min() >= 0.9999)


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


# ---- clients that send only `model` and `input`: the role is in the model name ----

QUERY = "who pays the rent"
PASSAGES = ["the tenant pays rent monthly", "a child with a fever needs fluids"]


@pytest.mark.parametrize(
    "name",
    [
        "embedgate-embedder:query",
        "champion:query",
        "v0001:query",
        "embedgate-embedder:v0001:query",
        "v0001@v0001:query",  # a version in its own space: itself
        "champion@v0001:query",
    ],
)
def test_the_openai_client_gets_the_query_prompt_from_the_model_name(server, prompted_model_dir, name):
    import openai

    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused")
    result = client.embeddings.create(model=name, input=TEXTS)
    assert _same_directions([row.embedding for row in result.data], _expected(prompted_model_dir, "query"))
    assert result.model.endswith(":query")  # the response says which prompt the vectors got


def test_the_openai_client_documents_and_plain_names_keep_their_vectors(server, prompted_model_dir):
    import openai

    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused")
    documents = client.embeddings.create(model="v0001:document", input=TEXTS)
    assert _same_directions([r.embedding for r in documents.data], _expected(prompted_model_dir, "document"))
    assert documents.model == "embedgate-embedder:v0001:document"
    plain = client.embeddings.create(model="v0001", input=TEXTS)  # no role: the text as sent, as before
    assert plain.model == "embedgate-embedder:v0001"
    assert _same_directions([r.embedding for r in plain.data], _expected(prompted_model_dir, None))
    assert not _same_directions([r.embedding for r in plain.data], _expected(prompted_model_dir, "query"))


def test_a_role_and_a_conflicting_input_type_are_a_400_through_the_openai_client(server):
    import openai

    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="v0001:query", input=TEXTS, extra_body={"input_type": "document"})
    assert err.value.status_code == 400
    assert "model 'v0001:query' asks for the query prompt but input_type 'document'" in str(err.value)


def test_v1_models_lists_the_prompted_models_role_names(server):
    listed = {row["id"]: row for row in httpx.get(f"{server.base_url}/v1/models").json()["data"]}
    for name in ("embedgate-embedder", "champion", "v0001"):
        assert listed[f"{name}:query"]["role"] == "query" and listed[f"{name}:document"]["role"] == "document"
    assert listed["v0001:query"]["version"] == "v0001"


def test_langchain_openai_embeddings_embed_queries_and_documents_with_their_prompts(
    server, prompted_model_dir
):
    from langchain_core.vectorstores import InMemoryVectorStore
    from langchain_openai import OpenAIEmbeddings

    # As docs/serving.md shows: one embedder per role; raw text, not tiktoken ids (check_embedding_ctx_length).
    common = {"base_url": f"{server.base_url}/v1", "api_key": "unused", "check_embedding_ctx_length": False}
    documents = OpenAIEmbeddings(model="embedgate-embedder:document", **common)
    queries = OpenAIEmbeddings(model="embedgate-embedder:query", **common)
    assert _same_directions(queries.embed_query(TEXTS[0]), _expected(prompted_model_dir, "query", TEXTS[:1]))
    assert _same_directions(documents.embed_documents(TEXTS), _expected(prompted_model_dir, "document"))

    store = InMemoryVectorStore(embedding=documents)
    store.add_texts(PASSAGES)
    hits = store.similarity_search_with_score_by_vector(queries.embed_query(QUERY), k=2)
    expected = (
        _expected(prompted_model_dir, "document", PASSAGES)
        @ _expected(prompted_model_dir, "query", [QUERY])[0]
    )
    assert sorted(score for _, score in hits) == pytest.approx(sorted(expected), abs=1e-4)


def test_llama_index_openai_embedding_embeds_queries_and_documents_with_their_prompts(
    server, prompted_model_dir
):
    from llama_index.core import VectorStoreIndex
    from llama_index.core.schema import TextNode
    from llama_index.embeddings.openai import OpenAIEmbedding

    common = {"api_base": f"{server.base_url}/v1", "api_key": "unused", "max_retries": 0}
    documents = OpenAIEmbedding(model_name="embedgate-embedder:document", **common)
    queries = OpenAIEmbedding(model_name="embedgate-embedder:query", **common)
    assert _same_directions(
        queries.get_query_embedding(TEXTS[0]), _expected(prompted_model_dir, "query", TEXTS[:1])
    )
    assert _same_directions(
        documents.get_text_embedding_batch(TEXTS), _expected(prompted_model_dir, "document")
    )

    index = VectorStoreIndex([TextNode(text=text) for text in PASSAGES], embed_model=documents)
    hits = index.as_retriever(embed_model=queries, similarity_top_k=2).retrieve(QUERY)
    expected = (
        _expected(prompted_model_dir, "document", PASSAGES)
        @ _expected(prompted_model_dir, "query", [QUERY])[0]
    )
    assert sorted(hit.score for hit in hits) == pytest.approx(sorted(expected), abs=1e-4)


def test_the_demos_openai_call_embeds_its_queries_with_the_query_prompt(registry, tmp_path):
    from gates.pipeline.served_call import call_served_champion

    call = call_served_champion(registry.root, TEXTS, log_path=tmp_path / "serve.log")
    assert call.model == "embedgate-embedder:v0001:query", call.model
    assert call.vectors == len(TEXTS) and call.dimensions == SERVING_DIM
