"""The vocabulary of the data gate: a `Check` (one Great Expectations expectation with our severity and the
columns it is about) and a `CheckTable` (a frame plus the checks to run on it).

Checks GX has no expectation for (cross-file id references, leakage, token counts, duplicates pointing at the
first copy) run on *derived* columns computed in pandas (see derived.py), so every check is a GX expectation:
one report shape, and Data Docs show them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning"]
BLANK = r"^\s*$"


@dataclass(frozen=True)
class Limits:
    max_seq_length: int  # tokens, special tokens included; longer texts are truncated (warning)
    max_chars: int  # characters; longer is treated as broken data (error)


@dataclass(frozen=True)
class Check:
    key: str  # unique within its table, e.g. "anchor.not_blank"; stored in the expectation's meta
    expectation: str  # a class in great_expectations.expectations, e.g. "ExpectColumnValuesToNotBeNull"
    kwargs: dict[str, Any]
    severity: Severity
    columns: tuple[str, ...]  # the dataset columns the check is about (what the report names)
    description: str
    show: tuple[str, ...] = ()  # frame columns whose values are shown for each offending row

    def build(self):
        """The GX expectation (GX imported here, not at module import)."""
        import great_expectations.expectations as gxe
        from great_expectations.expectations.metadata_types import FailureSeverity

        gx_severity = FailureSeverity.CRITICAL if self.severity == "error" else FailureSeverity.WARNING
        prefix = "ERROR" if self.severity == "error" else "WARNING"
        return getattr(gxe, self.expectation)(
            **self.kwargs,
            severity=gx_severity,
            description=f"[{prefix}] {self.description}",
            meta={"check": self.key, "severity": self.severity, "columns": list(self.columns)},
        )


@dataclass
class CheckTable:
    """One frame to validate. `frame` has a positional index; `rows[i]` is the 1-based number users see."""

    name: str  # "pairs", "corpus", "queries", "qrels/test"
    source: str  # the file it came from
    frame: Any  # pandas.DataFrame: dataset columns plus derived `<col>__<what>` columns
    rows: Any  # numpy array of row numbers, one per frame position
    row_numbers: str  # what the numbers mean, e.g. "data row (header not counted)"
    checks: list[Check] = field(default_factory=list)

    def add(self, check: Check) -> None:
        if any(c.key == check.key for c in self.checks):
            raise ValueError(
                f"duplicate check key {check.key!r} in table {self.name!r}"
            )  # a bug, not user input
        self.checks.append(check)


# --- constructors for the checks every text table shares ------------------------------------------------


def column_exists(column: str, why: str = "required") -> Check:
    return Check(
        f"{column}.exists",
        "ExpectColumnToExist",
        {"column": column},
        "error",
        (column,),
        f"column {column} is present ({why})",
    )


def not_null(column: str) -> Check:
    return Check(
        f"{column}.not_null",
        "ExpectColumnValuesToNotBeNull",
        {"column": column},
        "error",
        (column,),
        f"{column} has a value in every row",
        show=(column,),
    )


def is_string(column: str) -> Check:
    # derived `<col>__type`: the Python type name of a non-string value, None for strings and missing values
    return Check(
        f"{column}.is_text",
        "ExpectColumnValuesToBeNull",
        {"column": f"{column}__type"},
        "error",
        (column,),
        f"{column} holds text (a string), not a number, list or object",
        show=(column, f"{column}__type"),
    )


def not_blank(column: str) -> Check:
    return Check(
        f"{column}.not_blank",
        "ExpectColumnValuesToNotMatchRegex",
        {"column": f"{column}__text", "regex": BLANK},
        "error",
        (column,),
        f"{column} is not empty or whitespace-only",
        show=(column,),
    )


def max_chars(column: str, limit: int) -> Check:
    return Check(
        f"{column}.max_chars",
        "ExpectColumnValueLengthsToBeBetween",
        {"column": f"{column}__text", "min_value": 0, "max_value": limit},
        "error",
        (column,),
        f"{column} is at most {limit:,} characters (longer is almost surely a parsing or "
        f"concatenation error)",
        show=(column,),
    )


def max_tokens(column: str, limit: int, token_column: str | None = None) -> Check:
    token_column = token_column or f"{column}__tokens"
    return Check(
        f"{column}.max_tokens",
        "ExpectColumnValuesToBeBetween",
        {"column": token_column, "min_value": 0, "max_value": limit},
        "warning",
        (column,),
        f"{column} fits in {limit} tokens (max_seq_length, special tokens included); longer "
        f"texts are truncated by the model",
        show=(column, token_column),
    )


def text_checks(
    column: str, *, max_chars_limit: int, max_seq_length: int, required: bool = True
) -> list[Check]:
    """Value checks for one text column; `required=False` for ragged columns (negative_2..n) that may be empty."""
    checks = [not_null(column)] if required else []
    return checks + [
        is_string(column),
        not_blank(column),
        max_chars(column, max_chars_limit),
        max_tokens(column, max_seq_length),
    ]


def no_repeated_rows(columns: tuple[str, ...], what: str = "row") -> Check:
    # derived `duplicate_of_row`: for a repeated row, the number of its first copy
    return Check(
        "rows.no_duplicates",
        "ExpectColumnValuesToBeNull",
        {"column": "duplicate_of_row"},
        "error",
        columns,
        f"no exact duplicate {what}s (value shown: the row number of the first copy)",
        show=(*columns, "duplicate_of_row"),
    )


def minimum_rows(minimum: int, what: str) -> Check:
    return Check(
        "rows.minimum",
        "ExpectTableRowCountToBeBetween",
        {"min_value": minimum},
        "warning",
        (),
        f"at least {minimum:,} {what} (the seed minimum for fine-tuning; fewer may not move the model)",
    )
