"""Query/document prompts, applied the way sentence-transformers applies them: the prompt string prepended to the
text before tokenisation (`SentenceTransformer.encode(text, prompt_name="query")` tokenises `prompt + text`).

    prompts = {"query": "query: ", "document": "passage: "}      # embedder.json's "prompts", from the export
    texts = apply_prompt(["what is a lease?"], prompt_for(prompts, input_type="query"))

A request picks its prompt with `input_type` ("query" | "document", as Cohere/Voyage/Jina clients send it; Cohere's
"search_query" / "search_document" are accepted as the same), with text-embeddings-inference's `prompt_name`
(any prompt the export recorded), or with a role suffix on the model name, `v0003:query` / `champion:document`
(`split_role`): the only way for clients that send nothing but `model` and `input` (the openai client without
extra_body, LangChain's OpenAIEmbeddings, LlamaIndex's OpenAIEmbedding). No role, input_type or prompt_name: no
prompt, the text as sent (so a name without a suffix keeps returning the vectors clients stored). A text that
already starts with its prompt is left as it is, so a client that adds the prompt itself never gets it twice.

Hand-written because the ONNX runtime has no sentence-transformers (the service ships without torch); the gates
use the same function for every encoder, so what is gated is prompted exactly as what is served.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from service.api_errors import ApiError

INPUT_TYPES = ("query", "document")
INPUT_TYPE_ALIASES = {
    "query": "query",
    "document": "document",
    "search_query": "query",
    "search_document": "document",
}


def apply_prompt(texts: Sequence[str], prompt: str | None) -> list[str]:
    """`prompt + text` for each text, except texts that already start with the prompt (never a prompt twice)."""
    if not prompt:
        return list(texts)
    return [text if text.startswith(prompt) else prompt + text for text in texts]


def role_prompt(prompts: Mapping[str, str] | None, role: str) -> str:
    """The prompt recorded for `role` ("query" | "document"), or "" when the export has none."""
    return (prompts or {}).get(role) or ""


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


# The model-name suffix that picks a role: `<any model name>:query`, after the version or the space
# (`embedgate-embedder:v0003:query`, `v0002@v0001:document`), so it composes with every other name.
ROLE_SEPARATOR = ":"


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


def role_rows(row: Mapping[str, object], prompts: Mapping[str, str] | None) -> list[dict]:
    """/v1/models rows `<id>:query` and `<id>:document` after a prompted model's row; none for a model without
    query or document prompts (its roles still answer, with the text as sent)."""
    if not any(role_prompt(prompts, role) for role in INPUT_TYPES):
        return []
    return [{**row, "id": f"{row['id']}{ROLE_SEPARATOR}{role}", "role": role} for role in INPUT_TYPES]
