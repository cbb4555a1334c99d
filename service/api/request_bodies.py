"""Request bodies of /v1/embeddings (OpenAI) and /embed (text-embeddings-inference) -> one `EmbeddingRequest`.

Parsed by hand rather than by a pydantic model, so that each bad value gets one message naming the field, what
arrived and what to send (a union like `str | list[str]` would otherwise report two errors for one mistake).
Everything here raises `ApiError(422)`; the body has already been read as a JSON object (400 otherwise).

    POST /v1/embeddings {"input": "text" | ["text", ...], "model": "embedgate-embedder", "dimensions": 128,
                         "encoding_format": "float" | "base64", "user": "...", "input_type": "query" | "document"}
    POST /embed         {"inputs": "text" | ["text", ...], "dimensions": 128, "normalize": true, "truncate": true,
                         "model": "champion" | "candidate" | "v0003", "input_type": "query" | "document",
                         "prompt_name": "query"}

`input_type` / `prompt_name` pick the model's query or document prompt, and so does a role suffix on `model`
(`"model": "v0003:query"`, service/model/prompts.py): the parsed request carries the name without it and the role as
its input_type.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service.api.errors import ApiError, describe_value
from service.api.prompt_fields import parse_input_type, parse_prompt_name, split_role, with_role

OPENAI_FIELDS = ("input", "model", "dimensions", "encoding_format", "user", "input_type")
NATIVE_FIELDS = ("inputs", "dimensions", "normalize", "truncate", "model", "input_type", "prompt_name")
ENCODING_FORMATS = ("float", "base64")


@dataclass(frozen=True)
class RequestLimits:
    max_inputs: int
    max_chars: int
    default_truncate: bool


@dataclass(frozen=True)
class EmbeddingRequest:
    texts: tuple[str, ...]
    dimensions: int | None  # None: the version's serving_dim
    truncate: bool
    encoding_format: str = "float"
    model: str | None = None  # None: whatever is served; never with its role suffix (that is input_type)
    input_type: str | None = None  # "query" | "document": which of the model's prompts to prepend
    prompt_name: str | None = None  # TEI: a prompt of the model by name


def parse_openai_request(body: dict[str, Any], limits: RequestLimits) -> EmbeddingRequest:
    _reject_unknown_fields(body, OPENAI_FIELDS)
    encoding_format = body.get("encoding_format", "float")
    if encoding_format is None:
        encoding_format = "float"
    if encoding_format not in ENCODING_FORMATS:
        raise _invalid(
            "encoding_format",
            f"encoding_format: expected one of {list(ENCODING_FORMATS)}, got "
            f"{describe_value(encoding_format)}",
            code="invalid_encoding_format",
        )
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _invalid(
            "user",
            f"user: expected a string (an end-user id, not used for embedding), got {describe_value(user)}",
        )
    model, role = split_role(_model(body.get("model")))
    return EmbeddingRequest(
        texts=_texts(body, "input", limits),
        dimensions=_dimensions(body.get("dimensions")),
        truncate=limits.default_truncate,
        encoding_format=encoding_format,
        model=model,
        input_type=with_role(model, role, parse_input_type(body.get("input_type"))),
    )


def parse_native_request(body: dict[str, Any], limits: RequestLimits) -> EmbeddingRequest:
    _reject_unknown_fields(body, NATIVE_FIELDS)
    normalize = _optional_bool(body, "normalize", default=True)
    if not normalize:
        # The exported graph ends in L2 normalisation, so un-normalised vectors do not exist to return.
        raise _invalid(
            "normalize",
            "normalize: false is not supported: this model's graph outputs unit-length "
            "vectors (and truncated ones are re-normalised); omit normalize or send true",
            code="unsupported_option",
        )
    model, role = split_role(_model(body.get("model")))
    prompt_name = parse_prompt_name(body.get("prompt_name"))
    return EmbeddingRequest(
        texts=_texts(body, "inputs", limits),
        dimensions=_dimensions(body.get("dimensions")),
        truncate=_optional_bool(body, "truncate", default=limits.default_truncate),
        model=model,
        input_type=with_role(model, role, parse_input_type(body.get("input_type")), prompt_name),
        prompt_name=prompt_name,
    )


def resolve_dimensions(requested: int | None, served_dims: Sequence[int], serving_dim: int) -> int:
    """The dims to return: the request's if this version was exported for it, else 422 listing what is."""
    if requested is None:
        return serving_dim
    if requested not in served_dims:
        raise _invalid(
            "dimensions",
            f"dimensions: {requested} is not one this model was trained and exported "
            f"for; allowed: {sorted(served_dims, reverse=True)} (omit it for {serving_dim})",
            code="unsupported_dimensions",
        )
    return requested


def check_model_name(requested: str | None, accepted: Sequence[str]) -> None:
    """404 unless `requested` names the served model (OpenAI answers an unknown model with 404 too)."""
    if requested is not None and requested not in accepted:
        raise ApiError(
            404,
            "model_not_found",
            f"model {requested!r} is not served here; this service serves "
            f"{accepted[0]!r} (also accepted: {list(accepted[1:])}); omit model or send one of these",
            param="model",
        )


def _texts(body: dict[str, Any], field: str, limits: RequestLimits) -> tuple[str, ...]:
    if field not in body:
        raise _invalid(
            field,
            f"{field} is required: send a string or a list of strings, e.g. "
            f'{{"{field}": ["first text", "second text"]}}',
            code="missing_input",
        )
    value = body[field]
    if isinstance(value, str):
        texts: list[Any] = [value]
    elif isinstance(value, list):
        texts = value
    else:
        raise _invalid(
            field,
            f"{field}: expected a string or a list of strings, got {describe_value(value)}",
            code="invalid_input",
        )
    if not texts:
        raise _invalid(field, f"{field}: the list is empty; send at least one text", code="empty_input")
    if len(texts) > limits.max_inputs:
        raise _invalid(
            field,
            f"{field}: {len(texts)} texts in one request, the limit is {limits.max_inputs} "
            f"(EMBEDGATE_MAX_INPUTS_PER_REQUEST); split them over several requests",
            code="too_many_inputs",
        )
    for index, text in enumerate(texts):
        _check_text(text, f"{field}[{index}]" if isinstance(value, list) else field, limits.max_chars)
    return tuple(texts)


def _check_text(text: Any, where: str, max_chars: int) -> None:
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        raise _invalid(
            where,
            f"{where}: expected a string, got {describe_value(text)}; token-id input is not "
            f"supported: send the text itself",
            code="invalid_input",
        )
    if isinstance(text, list):
        raise _invalid(
            where,
            f"{where}: expected a string, got a nested list; send a flat list of strings "
            f"(token-id arrays are not supported)",
            code="invalid_input",
        )
    if not isinstance(text, str):
        raise _invalid(where, f"{where}: expected a string, got {describe_value(text)}", code="invalid_input")
    if not text.strip():
        raise _invalid(
            where,
            f"{where}: the text is empty or whitespace only; send text with content (an "
            f"empty text has no meaningful embedding)",
            code="empty_input",
        )
    if len(text) > max_chars:
        raise _invalid(
            where,
            f"{where}: {len(text)} characters, the limit is {max_chars} "
            f"(EMBEDGATE_MAX_INPUT_CHARS); split the text into passages",
            code="input_too_long",
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:  # JSON's \ud800-style escapes can carry lone surrogates
        raise _invalid(
            where,
            f"{where}: character {err.start} is an unpaired surrogate "
            f"({text[err.start]!r}); send valid Unicode text",
            code="invalid_input",
        ) from None


def _dimensions(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(
            "dimensions",
            f"dimensions: expected an integer such as 128, got {describe_value(value)}",
            code="unsupported_dimensions",
        )
    return value


def _model(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(
            "model", f"model: expected a string (the served model's name), got {describe_value(value)}"
        )
    return value


def _optional_bool(body: dict[str, Any], field: str, default: bool) -> bool:
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _invalid(field, f"{field}: expected true or false, got {describe_value(value)}")
    return value


def _reject_unknown_fields(body: dict[str, Any], allowed: Sequence[str]) -> None:
    # A misspelt option ("dimension") silently ignored would return vectors of the wrong size.
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise _invalid(
            unknown[0],
            f"unknown field(s) {unknown}; this endpoint accepts {list(allowed)}",
            code="unknown_field",
        )


def _invalid(param: str, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(422, code, message, param=param)
