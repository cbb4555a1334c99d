"""`validate_dataset`: run the data gate on a loaded dataset and return an immutable `DataGateReport`.

from training.data.loading import load_dataset
from gates.data_gate import validate_dataset, write_report
report = validate_dataset(load_dataset("pairs.csv"), eval_data=load_dataset("eval.csv"))
write_report(report, "artifacts/data-gate/pairs")      # report.json + docs/index.html
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from gates.data_gate.checks import Limits
from gates.data_gate.errors import DataGateError
from gates.data_gate.report import DataGateReport, DatasetSummary, TableSummary, results_from_runs
from gates.data_gate.tokens import (
    DEFAULT_MAX_SEQ_LENGTH,
    default_model_dir,
    load_tokenizer,
    model_max_seq_length,
    untruncated,
)
from training.data.beir import IRDataset
from training.data.loading import TableDataset, dataset_type_of

if TYPE_CHECKING:
    from tokenizers import Tokenizer

MAX_CHARS = 20_000  # a text longer than this is a broken file (a whole document in one cell), not a sentence


def validate_dataset(
    data: TableDataset | IRDataset,
    *,
    eval_data: TableDataset | IRDataset | None = None,
    max_seq_length: int | None = None,
    tokenizer: Tokenizer | str | Path | None = None,
    max_chars: int = MAX_CHARS,
) -> DataGateReport:
    """Validate `data` (what `training.data.loading.load_dataset` returns) with the suite for its type.

    eval_data: an eval set of any type; its query-side texts must not appear in `data` (leakage is an error).
    tokenizer: a model folder holding tokenizer.json, or a `tokenizers.Tokenizer`; default all-MiniLM-L6-v2.
    max_seq_length: tokens before truncation; default the model folder's sentence_bert_config.json, else 256.
    max_chars: texts longer than this many characters are errors.
    """
    from gates.data_gate.ir_checks import build_ir_tables
    from gates.data_gate.leakage import leaked_to, query_side, table_query_side
    from gates.data_gate.runner import run_tables
    from gates.data_gate.table_checks import build_table

    _require_dataset(data, "data")
    if eval_data is not None:
        _require_dataset(eval_data, "eval_data")
    tok, tokenizer_label, model_limit = _resolve_tokenizer(tokenizer)
    if max_seq_length is None:
        max_seq_length = model_limit or DEFAULT_MAX_SEQ_LENGTH
    limits = Limits(_positive(max_seq_length, "max_seq_length"), _positive(max_chars, "max_chars"))
    eval_side = query_side(eval_data, "eval") if eval_data is not None else None
    if isinstance(data, IRDataset):
        tables = build_ir_tables(data, limits, tok, eval_side)
    else:
        train_side = table_query_side(data)
        leak = leaked_to(train_side, eval_side) if train_side is not None and eval_side is not None else None
        tables = [build_table(data, limits, tok, leak)]
    runs = run_tables(tables, _name(data))
    summary = DatasetSummary(
        dataset_type=dataset_type_of(data).value,
        source=str(_source(data)),
        tables=tuple(TableSummary(t.name, t.source, len(t.frame), t.row_numbers) for t in tables),
        column_map=MappingProxyType(dict(getattr(data, "column_map", {}))),
        notes=tuple(getattr(data, "notes", ())) + _eval_notes(eval_data, eval_side),
        max_seq_length=limits.max_seq_length,
        max_chars=limits.max_chars,
        tokenizer=tokenizer_label,
        eval_source=None if eval_data is None else str(_source(eval_data)),
        eval_type=None if eval_data is None else dataset_type_of(eval_data).value,
    )
    return DataGateReport(summary, results_from_runs(runs), tuple(runs))


def _require_dataset(value: object, name: str) -> None:
    if not isinstance(value, (TableDataset, IRDataset)):
        raise DataGateError(
            f"{name}: expected a TableDataset or IRDataset from training.data.loading.load_dataset, "
            f"got {type(value).__name__}; load the file first: load_dataset(path)"
        )


def _positive(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise DataGateError(f"{name}: expected a positive whole number, got {value!r}")
    return value


def _resolve_tokenizer(tokenizer: Tokenizer | str | Path | None) -> tuple[Tokenizer, str, int | None]:
    """(tokenizer without truncation, a label for the report, the model folder's max_seq_length if any)."""
    if tokenizer is None or isinstance(tokenizer, (str, Path)):
        model_dir = default_model_dir() if tokenizer is None else Path(tokenizer)
        return load_tokenizer(model_dir), str(model_dir), model_max_seq_length(model_dir)
    if not hasattr(tokenizer, "encode_batch") or not hasattr(tokenizer, "to_str"):
        raise DataGateError(
            f"tokenizer: expected a model folder or a tokenizers.Tokenizer, got "
            f"{type(tokenizer).__name__}; pass the folder that holds tokenizer.json"
        )
    return untruncated(tokenizer), "tokenizers.Tokenizer given by the caller", None


def _source(data: TableDataset | IRDataset) -> Path:
    return Path(data.root if isinstance(data, IRDataset) else data.source)


def _name(data: TableDataset | IRDataset) -> str:
    source = _source(data)
    return source.name if isinstance(data, IRDataset) else source.stem


def _eval_notes(eval_data: TableDataset | IRDataset | None, eval_side: object) -> tuple[str, ...]:
    if eval_data is None:
        return ()
    if eval_side is None:
        return (f"eval set {_source(eval_data)} has no query-side text column: leakage not checked",)
    return (f"leakage checked against {_source(eval_data)} ({dataset_type_of(eval_data).value})",)
