"""Derived columns: checks Great Expectations has no expectation for, computed vectorised in pandas.

Naming: `<column>__<what>`. Each derived column holds either the offending value (None when fine), so the GX
check is `expect_column_values_to_be_null`, or a plain value (token count, parsed number) for a range check.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from tokenizers import Tokenizer


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def add_text_columns(
    frame: pd.DataFrame, column: str, tokenizer: Tokenizer | None, token_limit: int | None = None
) -> None:
    """`<col>__type` (type name of non-strings), `<col>__text` (strings only), and `<col>__tokens` (token
    count; see tokens.count_tokens for `token_limit`) unless `tokenizer` is None (a column whose tokens are
    counted in a joined text instead)."""
    from gates.data_gate.tokens import count_tokens

    values = frame[column]
    is_text = values.map(lambda v: isinstance(v, str))
    frame[f"{column}__type"] = values.map(
        lambda v: None if isinstance(v, str) or _is_missing(v) else type(v).__name__
    ).astype(object)
    frame[f"{column}__text"] = values.where(is_text, None).astype(object)
    if tokenizer is not None:
        frame[f"{column}__tokens"] = count_tokens(values, tokenizer, token_limit)


def duplicate_of_row(frame: pd.DataFrame, columns: list[str], rows: np.ndarray) -> pd.Series:
    """For each row that repeats an earlier one exactly (over `columns`), the row number of the first copy."""
    import numpy as np
    import pandas as pd

    subset = frame[columns]
    try:
        groups = subset.groupby(columns, dropna=False, sort=False).ngroup().to_numpy()
    except TypeError:  # unhashable cells (JSONL lists or objects): compare their text form
        groups = subset.astype(str).groupby(columns, dropna=False, sort=False).ngroup().to_numpy()
    positions = np.arange(len(frame))
    first = pd.Series(positions).groupby(groups).transform("min").to_numpy()
    repeated = first != positions
    result = np.full(len(frame), None, dtype=object)
    result[repeated] = np.asarray(rows)[first[repeated]].astype(int)
    return pd.Series(result, index=frame.index, dtype=object)


def as_number(values: pd.Series) -> pd.Series:
    """Finite numbers as float; anything else (text, NaN, inf, missing) as NaN."""
    import numpy as np
    import pandas as pd

    numbers = pd.to_numeric(values.map(lambda v: float(v) if isinstance(v, bool) else v), errors="coerce")
    return numbers.where(np.isfinite(numbers))


def not_a_number(values: pd.Series) -> pd.Series:
    """The value itself where it is present but not a finite number (e.g. "abc", "nan", "inf"); else None."""
    numbers = as_number(values)
    bad = values.notna() & numbers.isna()
    return values.where(bad, None).astype(object)


def label_values(values: pd.Series, *, booleans: bool = False) -> pd.Series:
    """Labels to compare with a value set: numbers as float, booleans (and "true"/"false" when `booleans`)
    as 1/0, anything else kept as its text so it shows up as unexpected; missing stays None."""

    def convert(value: Any) -> Any:
        if _is_missing(value):
            return None
        if isinstance(value, bool):
            return float(value) if booleans else str(value)
        if booleans and isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return 1.0 if value.strip().lower() == "true" else 0.0
        try:
            number = float(value)
        except (TypeError, ValueError):
            return str(value)
        return number if number == number and abs(number) != float("inf") else str(value)

    return values.map(convert).astype(object)


def bad_grade(values: pd.Series) -> pd.Series:
    """Relevance grades must be non-negative integers ("2" and "2.0" are fine); the bad value, else None."""
    numbers = as_number(values)
    good = numbers.notna() & (numbers >= 0) & (numbers == numbers.round())
    return values.where(values.notna() & ~good, None).astype(object)


_EDGES = re.compile(r"^[\W_]+|[\W_]+$")


def _normalise_one(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    text = " ".join(value.lower().split())
    if text and not (text[0].isalnum() and text[-1].isalnum()):  # fast path: most texts end in "?" or "."
        text = _EDGES.sub("", text)
    return text or None


def normalise_text(values: pd.Series) -> pd.Series:
    """Lowercase, collapse whitespace, strip punctuation and symbols at both ends; non-strings become None.

    "What is  a lease?" and "what is a lease" are the same question to a model: this is the identity used for
    anchor != positive and for train/eval leakage. An empty result (e.g. "???") is None: it matches nothing.
    """
    return values.map(_normalise_one).astype(object)
