"""Errors raised by `training`. Each message says what was expected, what arrived, and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


class EmbedgateTrainingError(ValueError):
    """Base class: a user-facing problem with inputs to training (not a bug)."""


class DataFormatError(EmbedgateTrainingError):
    """A dataset file is missing, cannot be parsed, or its columns cannot be mapped to a dataset type."""


class ConfigError(EmbedgateTrainingError):
    """A training or export configuration value is invalid."""


class ExportError(EmbedgateTrainingError):
    """A model cannot be exported faithfully to ONNX (unsupported modules, or the graph fails its parity check)."""


@dataclass(frozen=True)
class DataSettings:
    """Where a caller sets a table's dataset type and column map, worded as that caller's user writes them, so a
    ColumnMappingError can name the fix the caller really offers (a flag, a config key, a function argument)."""

    type: str  # the type setting with a `{value}` slot: "--type {value}", "data.type: {value}"
    columns: str  # the column map setting: "--columns", "data.columns"
    columns_example: str  # a whole mapping: "--columns anchor=question1,positive=question2"


# What a library caller passes: training.data.loading.load_dataset(path, dataset_type, columns).
LOAD_DATASET_ARGUMENTS = DataSettings(
    type="dataset_type='{value}'",
    columns="the columns argument",
    columns_example="columns='anchor=question1,positive=question2'",
)

ColumnFix = Literal["name", "correct", "remove", "ir"]


class ColumnMappingError(DataFormatError):
    """A table's dataset type cannot be told, or its column map is wrong, for the file `source`.

    `problem` says what was expected and what arrived; `fix` says what to do: "name" the type and map the
    columns, "correct" or "remove" the column map, or set the type to "ir". The message words the fix for
    `settings`; each command re-raises `for_caller(its settings)`, or `for_caller(None)` for a file it offers no
    type or column map for (an eval set), whose only fix is renaming the file's columns."""

    def __init__(
        self,
        problem: str,
        fix: ColumnFix,
        source: str,
        settings: DataSettings | None = LOAD_DATASET_ARGUMENTS,
    ):
        self.problem, self.fix, self.source = problem, fix, source
        super().__init__(f"{problem}; {_how_to_fix(fix, settings)}")

    def for_caller(self, settings: DataSettings | None) -> ColumnMappingError:
        return ColumnMappingError(self.problem, self.fix, self.source, settings)

    def is_about(self, path: str | Path | None) -> bool:
        """Whether the error concerns `path` (a caller's training data) rather than another file it read."""
        return path is not None and Path(self.source) == Path(path)


def _how_to_fix(fix: ColumnFix, settings: DataSettings | None) -> str:
    if settings is None:
        return (
            "rename the file's columns to a dataset type's canonical names (this command takes no dataset type "
            "or column map for this file)"
        )
    if fix == "name":
        return (
            f"set the dataset type (e.g. {settings.type.format(value='pairs')}) and map your column names to "
            f"canonical ones (e.g. {settings.columns_example})"
        )
    if fix == "ir":
        return f"for a BEIR folder set the type to ir ({settings.type.format(value='ir')})"
    return f"{fix} {settings.columns}"
