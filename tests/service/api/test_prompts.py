"""Prompt selection per request (input_type / prompt_name) and prompt application, without a server."""

from __future__ import annotations

import pytest

from service.api.errors import ApiError
from service.api.prompt_fields import prompt_for
from service.api.request_bodies import RequestLimits, parse_native_request, parse_openai_request
from service.model.prompts import apply_prompt

PROMPTS = {"query": "query: ", "document": "passage: "}
LIMITS = RequestLimits(max_inputs=4, max_chars=100, default_truncate=True)


def test_apply_prompt_prepends_once_and_leaves_prompted_texts_alone():
    assert apply_prompt(["a lease", "query: a lease"], "query: ") == ["query: a lease", "query: a lease"]
    assert apply_prompt(["a lease"], "") == ["a lease"]


@pytest.mark.parametrize(
    "input_type, prompt_name, expected",
    [
        ("query", None, "query: "),
        ("document", None, "passage: "),
        (None, "document", "passage: "),
        ("query", "query", "query: "),
        (None, None, ""),
    ],
)
def test_prompt_for_picks_the_models_prompt(input_type, prompt_name, expected):
    assert prompt_for(PROMPTS, input_type, prompt_name) == expected


def test_a_model_without_prompts_serves_input_type_as_the_plain_text():
    assert prompt_for({}, "query") == "" and prompt_for(None, "document") == ""


@pytest.mark.parametrize(
    "input_type, prompt_name, code, message",
    [
        (
            None,
            "classification",
            "unknown_prompt_name",
            r"'classification' is not one of this model's prompts; "
            r"available: \['document', 'query'\]",
        ),
        ("query", "document", "conflicting_prompt", r"input_type 'query' and prompt_name 'document'"),
    ],
)
def test_prompt_errors_name_what_is_allowed(input_type, prompt_name, code, message):
    with pytest.raises(ApiError, match=message) as caught:
        prompt_for(PROMPTS, input_type, prompt_name)
    assert caught.value.status == 422 and caught.value.code == code


@pytest.mark.parametrize("parse, field", [(parse_openai_request, "input"), (parse_native_request, "inputs")])
def test_input_type_is_parsed_on_both_endpoints(parse, field):
    assert parse({field: "x", "input_type": "query"}, LIMITS).input_type == "query"
    assert parse({field: "x", "input_type": "search_document"}, LIMITS).input_type == "document"
    assert parse({field: "x"}, LIMITS).input_type is None


@pytest.mark.parametrize("parse, field", [(parse_openai_request, "input"), (parse_native_request, "inputs")])
@pytest.mark.parametrize("value", ["passage", "QUERY", 3, ""])
def test_unknown_input_type_is_422_naming_the_allowed_values(parse, field, value):
    with pytest.raises(ApiError, match=r"input_type: got .*; allowed: \['query', 'document'\]") as caught:
        parse({field: "x", "input_type": value}, LIMITS)
    assert caught.value.status == 422 and caught.value.param == "input_type"


def test_prompt_name_is_teis_field_on_embed_only():
    assert parse_native_request({"inputs": "x", "prompt_name": "query"}, LIMITS).prompt_name == "query"
    with pytest.raises(ApiError, match=r"unknown field\(s\) \['prompt_name'\]"):
        parse_openai_request({"input": "x", "prompt_name": "query"}, LIMITS)
    with pytest.raises(ApiError, match=r"prompt_name: expected the name of one of the model's prompts"):
        parse_native_request({"inputs": "x", "prompt_name": 5}, LIMITS)
