"""Checks for the five table types (pairs, triplets, sts, nli, hard_negatives): one `CheckTable` per dataset.

Every text column: present, not null, a string, not blank, at most `max_chars` characters (error), at most
`max_seq_length` tokens (warning: the model truncates). Then the type's own rules: pair labels in {0, 1},
STS score a number in [0, 5], NLI label in {0, 1, 2}, anchor != positive, positive != negatives, at least one
negative per hard-negative row, no exact duplicate rows, no train/eval leakage, and the seed minimum size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gates.data_gate import checks as c
from gates.data_gate.derived import (
    add_text_columns,
    as_number,
    duplicate_of_row,
    label_values,
    normalise_text,
    not_a_number,
)
from training.data.formats import MINIMUM_SIZES, REQUIRED_COLUMNS, DatasetType, negative_columns, text_columns

if TYPE_CHECKING:
    import pandas as pd
    from tokenizers import Tokenizer

    from training.data.loading import TableDataset


def build_table(
    data: TableDataset, limits: c.Limits, tokenizer: Tokenizer, leak: pd.Series | None = None
) -> c.CheckTable:
    """`leak`: per row, where the same query-side text appears in the eval set (see leakage.py), or None."""
    kind = data.dataset_type
    frame = data.frame.reset_index(drop=True).copy()
    table = c.CheckTable(
        kind.value,
        str(data.source),
        frame,
        data.frame.index.to_numpy(),
        "data row, 1-based, header not counted",
    )
    required = list(REQUIRED_COLUMNS[kind]) + (["negative_1"] if kind is DatasetType.HARD_NEGATIVES else [])
    for column in required:
        table.add(c.column_exists(column, why=f"a {kind.value} dataset needs {', '.join(required)}"))

    negatives = negative_columns(frame.columns)
    for column in [col for col in text_columns(kind, frame.columns) if col in frame.columns]:
        add_text_columns(frame, column, tokenizer, limits.max_seq_length)
        ragged = column in negatives  # rows may have fewer hard negatives than the widest row
        for check in c.text_checks(
            column,
            max_chars_limit=limits.max_chars,
            max_seq_length=limits.max_seq_length,
            required=not ragged,
        ):
            table.add(check)

    _label_checks(table, kind)
    _pair_identity_checks(table, kind, negatives)
    dataset_columns = [col for col in data.frame.columns if col in frame.columns]
    frame["duplicate_of_row"] = duplicate_of_row(frame, dataset_columns, table.rows)
    table.add(c.no_repeated_rows(tuple(dataset_columns)))
    if leak is not None:
        _leak_check(table, kind, leak)
    _size_check(table, kind)
    return table


def _label_checks(table: c.CheckTable, kind: DatasetType) -> None:
    frame = table.frame
    if kind is DatasetType.STS and "score" in frame.columns:
        frame["score__not_a_number"] = not_a_number(frame["score"])
        frame["score__number"] = as_number(frame["score"])
        table.add(c.not_null("score"))
        table.add(
            c.Check(
                "score.is_number",
                "ExpectColumnValuesToBeNull",
                {"column": "score__not_a_number"},
                "error",
                ("score",),
                "score is a finite number (not text, NaN or inf)",
                show=("score",),
            )
        )
        table.add(
            c.Check(
                "score.range",
                "ExpectColumnValuesToBeBetween",
                {"column": "score__number", "min_value": 0, "max_value": 5},
                "error",
                ("score",),
                "score is within 0-5 (the STS-B scale; rescale other scales to it)",
                show=("score",),
            )
        )
    label_sets = {DatasetType.NLI: [0, 1, 2], DatasetType.PAIRS: [0, 1]}
    if kind in label_sets and "label" in frame.columns:
        allowed = label_sets[kind]
        frame["label__value"] = label_values(frame["label"], booleans=kind is DatasetType.PAIRS)
        meaning = (
            "0 entailment, 1 neutral, 2 contradiction"
            if kind is DatasetType.NLI
            else "1 a positive pair, 0 not"
        )
        table.add(c.not_null("label"))
        table.add(
            c.Check(
                "label.in_set",
                "ExpectColumnValuesToBeInSet",
                {"column": "label__value", "value_set": allowed},
                "error",
                ("label",),
                f"label is one of {allowed} ({meaning})",
                show=("label",),
            )
        )


def _pair_identity_checks(table: c.CheckTable, kind: DatasetType, negatives: list[str]) -> None:
    frame = table.frame
    if kind not in (DatasetType.PAIRS, DatasetType.TRIPLETS, DatasetType.HARD_NEGATIVES):
        return
    if {"anchor", "positive"} <= set(frame.columns):
        # A derived column rather than GX's ExpectSelectColumnValuesToBeUniqueWithinRecord: that one runs a
        # row-wise pandas `nunique(axis=1)`, about 5 s per 100k rows here, this is one vectorised comparison.
        frame["anchor__same_as"] = _first_equal_column(frame, "anchor", ["positive"])
        table.add(
            c.Check(
                "anchor_positive.differ",
                "ExpectColumnValuesToBeNull",
                {"column": "anchor__same_as"},
                "error",
                ("anchor", "positive"),
                "anchor and positive differ (ignoring case, whitespace and end punctuation): "
                "a pair of identical texts teaches nothing",
                show=("anchor", "positive"),
            )
        )
    compared = ["negative"] if kind is DatasetType.TRIPLETS else negatives
    compared = [col for col in compared if col in frame.columns]
    if "positive" in frame.columns and compared:
        frame["positive__same_as"] = _first_equal_column(frame, "positive", compared)
        table.add(
            c.Check(
                "positive_negative.differ",
                "ExpectColumnValuesToBeNull",
                {"column": "positive__same_as"},
                "error",
                ("positive", *compared),
                "positive differs from every negative (value shown: the negative column that "
                "repeats it); a negative equal to the positive contradicts the loss",
                show=("positive", "positive__same_as"),
            )
        )
    if kind is DatasetType.HARD_NEGATIVES and negatives:
        present = [frame[col].map(lambda v: isinstance(v, str) and bool(v.strip())) for col in negatives]
        frame["negatives__count"] = sum(p.astype(int) for p in present)
        table.add(
            c.Check(
                "negatives.at_least_one",
                "ExpectColumnValuesToBeBetween",
                {"column": "negatives__count", "min_value": 1},
                "error",
                tuple(negatives),
                "every row has at least one non-empty hard negative",
                show=("anchor", "negatives__count"),
            )
        )


def _first_equal_column(frame: pd.DataFrame, column: str, others: list[str]) -> pd.Series:
    """Per row, the first of `others` whose normalised text equals `column`'s, else None."""
    import pandas as pd

    base = normalise_text(frame[column])
    result = pd.Series(None, index=frame.index, dtype=object)
    for other in reversed(others):  # reversed: the first matching column wins
        same = base.notna() & (base == normalise_text(frame[other]))
        result = result.mask(same, other)
    return result


def _leak_check(table: c.CheckTable, kind: DatasetType, leak: pd.Series) -> None:
    from gates.data_gate.leakage import QUERY_COLUMN

    column = QUERY_COLUMN[kind]
    table.frame[f"{column}__in_eval"] = leak.to_numpy()
    table.add(
        c.Check(
            f"{column}.not_in_eval",
            "ExpectColumnValuesToBeNull",
            {"column": f"{column}__in_eval"},
            "error",
            (column,),
            f"no {column} text also appears in the eval set (after lowercasing, collapsing "
            f"whitespace and stripping end punctuation): a leak inflates every eval metric "
            f"(value shown: where the copy is)",
            show=(column, f"{column}__in_eval"),
        )
    )


def _size_check(table: c.CheckTable, kind: DatasetType) -> None:
    minimum, what = MINIMUM_SIZES[kind]
    frame = table.frame
    if kind is DatasetType.PAIRS and "label__value" in frame.columns:
        # Rows labelled 0 are dropped before training (loading.to_hf_dataset): count the positive pairs.
        frame["label__positive"] = (frame["label__value"] == 1.0).astype(float)
        table.add(
            c.Check(
                "rows.minimum",
                "ExpectColumnSumToBeBetween",
                {"column": "label__positive", "min_value": minimum},
                "warning",
                ("label",),
                f"at least {minimum:,} {what} with label 1 (the seed minimum for fine-tuning; rows "
                f"labelled 0 are not training pairs)",
            )
        )
        return
    table.add(c.minimum_rows(minimum, what))
