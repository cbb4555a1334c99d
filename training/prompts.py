"""Query/document prompts for training: which prompt each text gets, the sentence-transformers way.

    prompts = resolve_prompts(config.prompts, model)        # config's, else the model's own; set on the model
    args = SentenceTransformerTrainingArguments(..., prompts=column_prompts(rows.column_names, prompts, symmetric))
    model.encode_query(anchors), model.encode_document(corpus)  # mining, dev evaluation, rotation

Many embedding models (e5, bge, gte, nomic-embed, arctic-embed) were trained with a query prompt ("query: ",
"search_query: ", an instruction) and a document prompt; used without them they score lower, and a baseline scored
without its prompts makes any candidate look better. The resolved prompts are set as the model's `prompts`, so
`encode_query` / `encode_document` apply them, `model.save` records them in config_sentence_transformers.json and
the export copies them into embedder.json for the service.

The trainer prepends a column's prompt to every text of that column; texts that already start with it are
stripped first (`strip_prompt_columns`), so a row never carries a prompt twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ROLES = ("query", "document")
# sentence-transformers' encode_document falls back to these names, in this order, when "document" is absent.
DOCUMENT_NAMES = ("document", "passage", "corpus")
QUERY_COLUMNS = (
    "anchor",
)  # the query side of pair / triplet / IR rows; every other text column is a document
SYMMETRIC_COLUMNS = ("sentence1", "sentence2", "premise", "hypothesis")  # both sides the same role: query


def model_prompts(model: Any) -> dict[str, str]:
    """The model's own query/document prompts (config_sentence_transformers.json), "" where it has none."""
    saved = dict(getattr(model, "prompts", None) or {})
    document = next((saved[name] for name in DOCUMENT_NAMES if saved.get(name)), "")
    return {"query": saved.get("query") or "", "document": document}


def resolve_prompts(configured: Mapping[str, str | None] | None, model: Any) -> dict[str, str]:
    """Config prompts override the model's own per role (None = keep the model's; "" = no prompt). The result is
    set on the model, so every encode and the saved model use it."""
    prompts = model_prompts(model)
    for role, value in (configured or {}).items():
        if value is not None:
            prompts[role] = value
    model.prompts = {**dict(model.prompts or {}), **prompts}
    return prompts


def column_prompts(columns: list[str], prompts: Mapping[str, str]) -> dict[str, str]:
    """Training-arguments `prompts`: column -> prompt for each text column that has a non-empty prompt."""
    out = {}
    for column in columns:
        if column in ("score", "label"):
            continue
        role = "query" if column in QUERY_COLUMNS or column in SYMMETRIC_COLUMNS else "document"
        if prompts.get(role):
            out[column] = prompts[role]
    return out


def strip_prompt_columns(rows: Any, by_column: Mapping[str, str]) -> Any:
    """A datasets.Dataset whose texts in prompted columns no longer start with their prompt (the trainer adds it)."""
    if not by_column or not any(_starts(rows[column], prompt) for column, prompt in by_column.items()):
        return rows

    def strip(batch: dict[str, list]) -> dict[str, list]:
        for column, prompt in by_column.items():
            batch[column] = [
                t[len(prompt) :] if isinstance(t, str) and t.startswith(prompt) else t for t in batch[column]
            ]
        return batch

    return rows.map(strip, batched=True, desc=None)


def strip_prepared(prepared: Any, prompts: Mapping[str, str]) -> Any:
    """The prepared training data (training.finetune.prepare.TrainingData) with prompts already in the data removed from
    every text: training rows, mining corpus, labelled positives and the dev set. Mining and dev evaluation then
    add each prompt once (encode_query / encode_document), and so does the trainer."""
    query, document = prompts.get("query") or "", prompts.get("document") or ""
    if not query and not document:
        return prepared

    def strip_q(text: str) -> str:
        return text[len(query) :] if query and text.startswith(query) else text

    def strip_d(text: str) -> str:
        return text[len(document) :] if document and text.startswith(document) else text

    prepared.train = strip_prompt_columns(
        prepared.train, column_prompts(prepared.train.column_names, prompts)
    )
    prepared.corpus = list(dict.fromkeys(strip_d(t) for t in prepared.corpus))
    prepared.labelled = {strip_q(a): {strip_d(p) for p in ps} for a, ps in prepared.labelled.items()}
    dev = prepared.dev
    if dev is not None and dev.get("kind") == "retrieval":
        dev["queries"] = [strip_q(t) for t in dev["queries"]]
        dev["corpus"] = [strip_d(t) for t in dev["corpus"]]
    elif dev is not None and "rows" in dev:
        dev["rows"] = strip_prompt_columns(dev["rows"], column_prompts(dev["rows"].column_names, prompts))
    return prepared


def _starts(texts: list, prompt: str) -> bool:
    return any(isinstance(t, str) and t.startswith(prompt) for t in texts)
