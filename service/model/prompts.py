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

How a request names its prompt (input_type, prompt_name, a role suffix) is read in
service/api/prompt_fields.py; this module is what every encoder applies.

Hand-written because the ONNX runtime has no sentence-transformers (the service ships without torch); the gates
use the same function for every encoder, so what is gated is prompted exactly as what is served.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

INPUT_TYPES = ("query", "document")

# The model-name suffix that picks a role: `<any model name>:query`, after the version or the space
# (`embedgate-embedder:v0003:query`, `v0002@v0001:document`), so it composes with every other name.
ROLE_SEPARATOR = ":"


def apply_prompt(texts: Sequence[str], prompt: str | None) -> list[str]:
    """`prompt + text` for each text, except texts that already start with the prompt (never a prompt twice)."""
    if not prompt:
        return list(texts)
    return [text if text.startswith(prompt) else prompt + text for text in texts]


def role_prompt(prompts: Mapping[str, str] | None, role: str) -> str:
    """The prompt recorded for `role` ("query" | "document"), or "" when the export has none."""
    return (prompts or {}).get(role) or ""


def role_rows(row: Mapping[str, object], prompts: Mapping[str, str] | None) -> list[dict]:
    """/v1/models rows `<id>:query` and `<id>:document` after a prompted model's row; none for a model without
    query or document prompts (its roles still answer, with the text as sent)."""
    if not any(role_prompt(prompts, role) for role in INPUT_TYPES):
        return []
    return [{**row, "id": f"{row['id']}{ROLE_SEPARATOR}{role}", "role": role} for role in INPUT_TYPES]
