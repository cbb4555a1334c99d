"""Checks for an IR dataset (BEIR folder): corpus.jsonl, queries.jsonl and one table per qrels split.

corpus / queries: `_id` present, non-empty, unique; text present, a string, not blank, at most `max_chars`
characters; documents (title + text, as BEIR encodes them) and queries fit `max_seq_length` tokens (warning);
the same text under two ids (warning). qrels: ids exist in queries.jsonl and corpus.jsonl, grades are
non-negative integers, each (query, document) is judged once. Per split, every judged query has a relevant
document (grade > 0); train queries do not reappear in test/dev; at least 100 judged training queries (warning).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from gates.data_gate import checks as c
from gates.data_gate.derived import add_text_columns, as_number, bad_grade, duplicate_of_row
from gates.data_gate.leakage import (
    EVAL_SPLITS,
    TRAIN_SPLITS,
    QuerySide,
    ir_query_side,
    judged_splits,
    leaked_to,
)
from training.data.formats import MINIMUM_SIZES, DatasetType

if TYPE_CHECKING:
    import pandas as pd
    from tokenizers import Tokenizer

    from training.data.beir import IRDataset


def build_ir_tables(
    data: IRDataset, limits: c.Limits, tokenizer: Tokenizer, eval_side: QuerySide | None = None
) -> list[c.CheckTable]:
    """`eval_side`: query texts of a separate eval set (--eval), checked against the training queries."""
    corpus = _id_table("corpus", data.root / "corpus.jsonl", data.corpus, limits, tokenizer)
    queries = _id_table("queries", data.root / "queries.jsonl", data.queries, limits, tokenizer)
    qrels = [_qrels_table(data, split) for split in data.splits]
    _judgement_checks(queries, data)
    _leak_checks(queries, data, eval_side)
    return [corpus, queries, *qrels]


def _id_table(
    name: str, path: Path, source: pd.DataFrame, limits: c.Limits, tokenizer: Tokenizer
) -> c.CheckTable:
    frame = source.reset_index(drop=True).copy()
    table = c.CheckTable(
        name, str(path), frame, source.index.to_numpy(), "JSON object, 1-based, blank lines skipped"
    )
    for column in ("_id", "text"):
        table.add(c.column_exists(column, why=f"every {name}.jsonl line is an object with _id and text"))
    if "_id" in frame.columns:
        frame["_id__text"] = (
            frame["_id"].where(frame["_id"].map(lambda v: isinstance(v, str)), None).astype(object)
        )
        table.add(c.not_null("_id"))
        table.add(
            c.Check(
                "_id.not_blank",
                "ExpectColumnValuesToNotMatchRegex",
                {"column": "_id__text", "regex": c.BLANK},
                "error",
                ("_id",),
                "_id is not empty or whitespace-only",
                show=("_id",),
            )
        )
        table.add(
            c.Check(
                "_id.unique",
                "ExpectColumnValuesToBeUnique",
                {"column": "_id"},
                "error",
                ("_id",),
                f"every {name} _id is unique (qrels could not tell the copies apart)",
                show=("_id",),
            )
        )
    if "text" not in frame.columns:
        return table
    joined = name == "corpus" and "title" in frame.columns  # documents are encoded as "title. text"
    add_text_columns(frame, "text", None if joined else tokenizer, limits.max_seq_length)
    token_column = "text__tokens"
    if joined:
        add_text_columns(frame, "title", None)
        table.add(c.is_string("title"))
        frame["document__tokens"] = _document_tokens(frame, tokenizer, limits.max_seq_length)
        token_column = "document__tokens"
    for check in c.text_checks(
        "text", max_chars_limit=limits.max_chars, max_seq_length=limits.max_seq_length
    ):
        if check.key == "text.max_tokens" and joined:
            check = replace(
                c.max_tokens("text", limits.max_seq_length, token_column),
                columns=("title", "text"),
                description=f"a document (title. text, as BEIR encodes it) fits in "
                f"{limits.max_seq_length} tokens; longer documents are truncated",
            )
        table.add(check)
    text_columns = ["title", "text"] if joined else ["text"]
    frame["duplicate_of_row"] = duplicate_of_row(frame, text_columns, table.rows)
    table.add(
        c.Check(
            "text.no_duplicates",
            "ExpectColumnValuesToBeNull",
            {"column": "duplicate_of_row"},
            "warning",
            tuple(text_columns),
            f"no two {name} ids hold the same {' + '.join(text_columns)} (value "
            f"shown: the row of the first copy); a duplicate splits its relevance judgements",
            show=("_id", "text", "duplicate_of_row"),
        )
    )
    return table


def _document_tokens(frame: pd.DataFrame, tokenizer: Tokenizer, limit: int) -> pd.Series:
    """Title and text joined as `IRDataset.doc_texts` does (what the model encodes for a document)."""
    import pandas as pd

    from gates.data_gate.tokens import count_tokens

    titles = frame["title__text"].fillna("").str.strip()
    texts = frame["text__text"].fillna("").str.strip()
    joined = [f"{t}. {x}" if t and x else (t or x) for t, x in zip(titles, texts, strict=True)]
    return count_tokens(pd.Series(joined, index=frame.index), tokenizer, limit)


def _qrels_table(data: IRDataset, split: str) -> c.CheckTable:
    source = data.qrels[split]
    frame = source.reset_index(drop=True).copy()
    path = next((p for p in sorted((data.root / "qrels").glob(f"{split}.*"))), data.root / "qrels" / split)
    table = c.CheckTable(
        f"qrels/{split}", str(path), frame, source.index.to_numpy(), "line number in the file"
    )
    query_ids = set(data.queries["_id"].dropna()) if "_id" in data.queries.columns else set()
    corpus_ids = set(data.corpus["_id"].dropna()) if "_id" in data.corpus.columns else set()
    frame["query_id__in_queries"] = frame["query_id"].isin(query_ids)
    frame["corpus_id__in_corpus"] = frame["corpus_id"].isin(corpus_ids)
    frame["score__bad_grade"] = bad_grade(frame["score"])
    frame["duplicate_of_row"] = duplicate_of_row(frame, ["query_id", "corpus_id"], table.rows)
    table.add(
        c.Check(
            "rows.not_empty",
            "ExpectTableRowCountToBeBetween",
            {"min_value": 1},
            "error",
            (),
            f"qrels/{split} holds at least one judgement (an empty split cannot train or evaluate)",
        )
    )
    table.add(
        c.Check(
            "query_id.known",
            "ExpectColumnValuesToBeInSet",
            {"column": "query_id__in_queries", "value_set": [True]},
            "error",
            ("query_id",),
            "every query-id exists in queries.jsonl",
            show=("query_id",),
        )
    )
    table.add(
        c.Check(
            "corpus_id.known",
            "ExpectColumnValuesToBeInSet",
            {"column": "corpus_id__in_corpus", "value_set": [True]},
            "error",
            ("corpus_id",),
            "every corpus-id exists in corpus.jsonl",
            show=("corpus_id",),
        )
    )
    table.add(
        c.Check(
            "score.grade",
            "ExpectColumnValuesToBeNull",
            {"column": "score__bad_grade"},
            "error",
            ("score",),
            "every score (relevance grade) is a non-negative integer",
            show=("score",),
        )
    )
    table.add(
        c.Check(
            "rows.no_duplicates",
            "ExpectColumnValuesToBeNull",
            {"column": "duplicate_of_row"},
            "error",
            ("query_id", "corpus_id"),
            "each (query-id, corpus-id) pair is judged once (value shown: the line of the first judgement)",
            show=("query_id", "corpus_id", "duplicate_of_row"),
        )
    )
    return table


def _judgement_checks(queries: c.CheckTable, data: IRDataset) -> None:
    """Per split, on queries.jsonl: `relevant__<split>` is 1 for a judged query with a grade > 0, 0 for a
    judged query without one, NaN for a query the split does not judge."""
    import numpy as np

    frame = queries.frame
    if "_id" not in frame.columns:
        return
    for split in data.splits:
        qrels = data.qrels[split]
        grades = as_number(qrels["score"]).fillna(0)
        best = grades.groupby(qrels["query_id"].to_numpy()).max()
        column = f"relevant__{split}"
        frame[column] = frame["_id"].map(
            lambda qid, best=best: np.nan if qid not in best.index else float(best[qid] > 0)
        )
        queries.add(
            c.Check(
                f"judged_{split}.has_relevant",
                "ExpectColumnValuesToBeInSet",
                {"column": column, "value_set": [1.0]},
                "error",
                ("_id",),
                f"every query judged in qrels/{split} has at least one relevant document (grade > 0); "
                f"a query without one cannot be scored",
                show=("_id", "text"),
            )
        )
    size_splits = [s for s in data.splits if s in TRAIN_SPLITS] or data.splits
    minimum, what = MINIMUM_SIZES[DatasetType.IR]
    if len(size_splits) == 1:
        queries.add(
            c.Check(
                "judged.minimum",
                "ExpectColumnSumToBeBetween",
                {"column": f"relevant__{size_splits[0]}", "min_value": minimum},
                "warning",
                ("_id",),
                f"at least {minimum:,} {what} in qrels/{size_splits[0]} (the seed minimum for fine-tuning)",
            )
        )
    else:  # no train split and several others: count queries relevant in any of them
        frame["relevant__any"] = frame[[f"relevant__{s}" for s in size_splits]].max(axis=1)
        queries.add(
            c.Check(
                "judged.minimum",
                "ExpectColumnSumToBeBetween",
                {"column": "relevant__any", "min_value": minimum},
                "warning",
                ("_id",),
                f"at least {minimum:,} {what} (the seed minimum for fine-tuning)",
            )
        )


def _leak_checks(queries: c.CheckTable, data: IRDataset, eval_side: QuerySide | None) -> None:
    frame = queries.frame
    train = ir_query_side(data, judged_splits(data, "train"))
    if train is None:
        return
    held_out = [s for s in data.splits if s in EVAL_SPLITS]
    if any(s in TRAIN_SPLITS for s in data.splits) and held_out:
        frame["text__in_test"] = leaked_to(train, ir_query_side(data, held_out)).to_numpy()
        queries.add(
            c.Check(
                "text.not_in_test",
                "ExpectColumnValuesToBeNull",
                {"column": "text__in_test"},
                "error",
                ("text",),
                f"no query judged in qrels/train also appears (same normalised text) in "
                f"qrels/{', qrels/'.join(held_out)} (value shown: where the copy is)",
                show=("_id", "text", "text__in_test"),
            )
        )
    if eval_side is not None:
        frame["text__in_eval"] = leaked_to(train, eval_side).to_numpy()
        queries.add(
            c.Check(
                "text.not_in_eval",
                "ExpectColumnValuesToBeNull",
                {"column": "text__in_eval"},
                "error",
                ("text",),
                "no training query also appears (same normalised text) in the eval set "
                "(value shown: where the copy is)",
                show=("_id", "text", "text__in_eval"),
            )
        )
