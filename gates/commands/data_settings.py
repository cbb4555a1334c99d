"""How each command lets its user set a dataset's type and column map, so a ColumnMappingError names a fix the
command really has: a flag, a config key, or (for a file it offers neither for) renaming the file's columns."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from training.errors import ColumnMappingError, DataSettings

# `embedgate validate` and `embedgate mine`
FLAGS = DataSettings(
    type="--type {value}",
    columns="--columns",
    columns_example="--columns anchor=question1,positive=question2",
)
# `embedgate train`: --type is a flag; the column map is a config field (no --columns flag)
TRAIN = DataSettings(
    type="--type {value}",
    columns="data.columns (in the CONFIG file, or --set data.columns.<canonical>=<source>)",
    columns_example="data: {columns: {anchor: question1, positive: question2}} in the CONFIG file, or "
    "--set data.columns.anchor=question1 --set data.columns.positive=question2",
)


@contextmanager
def fixes_named_for(settings: DataSettings | None, data_path: str | Path | None = None) -> Iterator[None]:
    """Re-raise a ColumnMappingError about `data_path` with `settings`' fix, and one about any other file (an
    eval set, or every file when `settings` is None) with the only fix left: renaming the file's columns."""
    try:
        yield
    except ColumnMappingError as err:
        raise err.for_caller(settings if err.is_about(data_path) else None) from None
