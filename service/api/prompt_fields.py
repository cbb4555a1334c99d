"""A request's prompt fields: `input_type`, `prompt_name` and a role suffix on the model name (`v0003:query`),
read and checked against the model's prompts; each bad value is an ApiError naming what is allowed. How prompts
are applied: service/model/prompts.py."""

from __future__ import annotations

from collections.abc import Mapping

from service.api.errors import ApiError
from service.model.prompts import INPUT_TYPES, ROLE_SEPARATOR, role_prompt

INPUT_TYPE_ALIASES = {
    "query": "query",
    "document": "document",
    "search_query": "query",
    "search_document": "document",
}


def parse_input_type(value: object) -> str | None:
    """A request's `input_type` -> "query" | "document" | None; anything else is a 422 naming the allowed values."""
    if value is None:
        return None
    if not isinstance(value, str) or value not in INPUT_TYPE_ALIASES:
        shown = repr(value)[:60]
        raise ApiError(
            422,
            "invalid_input_type",
            f"input_type: got {shown}; allowed: {list(INPUT_TYPES)} (Cohere's "
            f"search_query / search_document are accepted too), or omit it for no prompt",
            param="input_type",
        )
    return INPUT_TYPE_ALIASES[value]


def parse_prompt_name(value: object) -> str | None:
    """A request's `prompt_name` (text-embeddings-inference): a non-empty string or None."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ApiError(
            422,
            "invalid_prompt_name",
            f"prompt_name: expected the name of one of the model's prompts "
            f'(a string such as "query"), got {repr(value)[:60]}',
            param="prompt_name",
        )
    return value


def prompt_for(
    prompts: Mapping[str, str] | None, input_type: str | None = None, prompt_name: str | None = None
) -> str:
    """The prompt a request asked for, checked against the prompts this model was exported with."""
    prompts = dict(prompts or {})
    if prompt_name is not None:
        if prompt_name not in prompts:
            raise ApiError(
                422,
                "unknown_prompt_name",
                f"prompt_name: {prompt_name!r} is not one of this model's "
                f"prompts; available: {sorted(prompts) or 'none (the model has no prompts)'}",
                param="prompt_name",
            )
        if input_type is not None and prompt_name != input_type:
            raise ApiError(
                422,
                "conflicting_prompt",
                f"input_type {input_type!r} and prompt_name {prompt_name!r} "
                f"ask for different prompts; send one of them",
                param="prompt_name",
            )
        return prompts[prompt_name] or ""
    if input_type is not None:
        return role_prompt(prompts, input_type)
    return ""


def split_role(name: str | None) -> tuple[str | None, str | None]:
    """ "v0003:query" -> ("v0003", "query"); a name without a role suffix -> (name, None)."""
    if name is None:
        return None, None
    base, sep, role = name.rpartition(ROLE_SEPARATOR)
    if not sep or role not in INPUT_TYPES:
        return name, None
    if not base:
        raise ApiError(
            404,
            "model_not_found",
            f"model {name!r}: expected a model name before {sep}{role}, e.g. "
            f"'champion{sep}{role}' or 'v0003{sep}{role}'",
            param="model",
        )
    return base, role


def with_role(
    model: str | None, role: str | None, input_type: str | None, prompt_name: str | None = None
) -> str | None:
    """The request's input_type once the model name's role is counted; a role that another field contradicts
    is a 400 (which prompt the client meant cannot be guessed)."""
    if role is None:
        return input_type
    for field, value in (("input_type", input_type), ("prompt_name", prompt_name)):
        if value is not None and value != role:
            raise ApiError(
                400,
                "conflicting_role",
                f"model '{model}{ROLE_SEPARATOR}{role}' asks for the {role} prompt but {field} {value!r} asks for "
                f"another; send one of them (the {ROLE_SEPARATOR}{role} suffix or {field})",
                param=field,
            )
    return role
