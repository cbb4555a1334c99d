"""A role suffix on the model name (`v0003:query`) picks the prompt for clients that send only `model` and
`input`; it composes with every other model name, and a field that contradicts it is a 400. No server here
(tests/service/api/test_api_prompts.py serves a prompted model to the openai, LangChain and LlamaIndex clients)."""

from __future__ import annotations

import pytest

from service.api.errors import ApiError
from service.api.prompt_fields import split_role
from service.api.request_bodies import RequestLimits, parse_native_request, parse_openai_request
from service.model.prompts import role_rows

LIMITS = RequestLimits(max_inputs=4, max_chars=100, default_truncate=True)


@pytest.mark.parametrize(
    "name, base, role",
    [
        ("v0003:query", "v0003", "query"),
        ("champion:document", "champion", "document"),
        ("candidate:query", "candidate", "query"),
        ("embedgate-embedder:query", "embedgate-embedder", "query"),
        ("embedgate-embedder:v0003:query", "embedgate-embedder:v0003", "query"),
        ("v0002@v0001:query", "v0002@v0001", "query"),
        ("champion@v0001:document", "champion@v0001", "document"),
        ("embedgate-embedder:v0002@v0001:query", "embedgate-embedder:v0002@v0001", "query"),
        # not a role suffix: left to the version resolver as it always was
        ("embedgate-embedder:v0003", "embedgate-embedder:v0003", None),
        ("v0003", "v0003", None),
        ("v0003:passage", "v0003:passage", None),
        ("query", "query", None),
        (None, None, None),
    ],
)
def test_split_role_takes_only_a_trailing_query_or_document(name, base, role):
    assert split_role(name) == (base, role)


@pytest.mark.parametrize("parse, field", [(parse_openai_request, "input"), (parse_native_request, "inputs")])
def test_the_role_becomes_the_requests_input_type_and_leaves_the_model_name(parse, field):
    parsed = parse({field: ["a lease"], "model": "embedgate-embedder:v0003:query"}, LIMITS)
    assert (parsed.model, parsed.input_type) == ("embedgate-embedder:v0003", "query")
    # the same role sent both ways (Cohere's alias included) is no conflict
    parsed = parse({field: ["a lease"], "model": "v0003:query", "input_type": "search_query"}, LIMITS)
    assert (parsed.model, parsed.input_type) == ("v0003", "query")
    parsed = parse({field: ["a lease"], "model": "v0003"}, LIMITS)
    assert (parsed.model, parsed.input_type) == ("v0003", None)


@pytest.mark.parametrize("parse, field", [(parse_openai_request, "input"), (parse_native_request, "inputs")])
def test_a_role_and_a_conflicting_input_type_are_a_400_naming_both(parse, field):
    with pytest.raises(ApiError) as err:
        parse({field: ["a lease"], "model": "champion:query", "input_type": "document"}, LIMITS)
    assert err.value.status == 400 and err.value.code == "conflicting_role"
    assert "model 'champion:query' asks for the query prompt but input_type 'document'" in err.value.message
    assert "send one of them" in err.value.message


def test_a_role_and_a_conflicting_prompt_name_are_a_400():
    with pytest.raises(ApiError) as err:
        parse_native_request(
            {"inputs": ["a lease"], "model": "v0003:document", "prompt_name": "query"}, LIMITS
        )
    assert err.value.status == 400
    assert "model 'v0003:document' asks for the document prompt but prompt_name 'query'" in err.value.message
    parsed = parse_native_request(
        {"inputs": ["a lease"], "model": "v0003:document", "prompt_name": "document"}, LIMITS
    )
    assert (parsed.input_type, parsed.prompt_name) == ("document", "document")


def test_a_role_without_a_model_name_is_a_404_with_an_example():
    with pytest.raises(ApiError) as err:
        parse_openai_request({"input": ["a lease"], "model": ":query"}, LIMITS)
    assert err.value.status == 404
    assert "expected a model name before :query, e.g. 'champion:query'" in err.value.message


def test_role_rows_list_both_roles_for_a_prompted_model_only():
    row = {"id": "v0003", "object": "model", "version": "v0003", "loaded": True}
    rows = role_rows(row, {"query": "query: ", "document": "passage: "})
    assert [(r["id"], r["role"], r["version"]) for r in rows] == [
        ("v0003:query", "query", "v0003"),
        ("v0003:document", "document", "v0003"),
    ]
    # bge style: a query prompt only; its documents are embedded as sent, under v0003:document too
    assert [r["id"] for r in role_rows(row, {"query": "Represent this: "})] == [
        "v0003:query",
        "v0003:document",
    ]
    assert role_rows(row, {}) == [] and role_rows(row, None) == []
    assert role_rows(row, {"classification": "classify: "}) == []  # prompts but no query/document role
