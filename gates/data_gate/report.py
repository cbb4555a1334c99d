"""The data gate's result: immutable, JSON-ready (`to_dict()`), one `ExpectationResult` per GX expectation.

A gate *fails* when any check of severity "error" fails; failed "warning" checks (truncation, seed minimum
sizes, duplicate documents) are reported but never fail the gate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gates.data_gate.checks import Check
    from gates.data_gate.runner import TableRun

MAX_EXAMPLES = 5
MAX_VALUE_CHARS = 200  # long texts are cut in examples; the row number leads to the full text


@dataclass(frozen=True)
class Example:
    row: int  # 1-based, as described by the table's `row_numbers`
    values: MappingProxyType  # column -> value (texts cut to MAX_VALUE_CHARS)

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "values": dict(self.values)}


@dataclass(frozen=True)
class ExpectationResult:
    name: str  # GX expectation type, e.g. "expect_column_values_to_not_be_null"
    check: str  # our key, e.g. "anchor.not_blank"
    table: str  # "pairs", "corpus", "queries", "qrels/test"
    columns: tuple[str, ...]
    severity: str  # "error" | "warning"
    passed: bool
    description: str
    element_count: int | None = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    observed_value: Any = None
    examples: tuple[Example, ...] = ()
    exception: str | None = None  # GX raised while evaluating (reported as a failure, with its message)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "check": self.check,
            "table": self.table,
            "columns": list(self.columns),
            "severity": self.severity,
            "passed": self.passed,
            "description": self.description,
            "element_count": self.element_count,
            "unexpected_count": self.unexpected_count,
            "unexpected_percent": self.unexpected_percent,
            "observed_value": jsonable(self.observed_value),
            "examples": [e.to_dict() for e in self.examples],
            "exception": self.exception,
        }


@dataclass(frozen=True)
class TableSummary:
    name: str
    source: str
    rows: int
    row_numbers: str  # what example row numbers mean for this table

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "rows": self.rows, "row_numbers": self.row_numbers}


@dataclass(frozen=True)
class DatasetSummary:
    dataset_type: str
    source: str
    tables: tuple[TableSummary, ...]
    column_map: MappingProxyType  # canonical -> source column name (table types)
    notes: tuple[str, ...]  # loader notes (expanded list columns, ignored columns, mapped label names)
    max_seq_length: int
    max_chars: int
    tokenizer: str
    eval_source: str | None = None
    eval_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.dataset_type,
            "source": self.source,
            "rows": {t.name: t.rows for t in self.tables},
            "tables": [t.to_dict() for t in self.tables],
            "column_map": dict(self.column_map),
            "notes": list(self.notes),
            "max_seq_length": self.max_seq_length,
            "max_chars": self.max_chars,
            "tokenizer": self.tokenizer,
            "eval": None
            if self.eval_source is None
            else {"source": self.eval_source, "type": self.eval_type},
        }


@dataclass(frozen=True)
class DataGateReport:
    dataset: DatasetSummary
    results: tuple[ExpectationResult, ...]
    # The GX suites and validation results, for rendering Data Docs (docs.py); not part of the JSON report.
    gx_runs: tuple[Any, ...] = field(default=(), compare=False, repr=False)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> tuple[ExpectationResult, ...]:
        return tuple(r for r in self.results if not r.passed and r.severity == "error")

    @property
    def warnings(self) -> tuple[ExpectationResult, ...]:
        return tuple(r for r in self.results if not r.passed and r.severity == "warning")

    def result(self, check: str, table: str | None = None) -> ExpectationResult:
        """The result of one check by key (and table, for IR datasets); KeyError names what exists."""
        found = [r for r in self.results if r.check == check and (table is None or r.table == table)]
        if len(found) != 1:
            known = ", ".join(sorted({f"{r.table}:{r.check}" for r in self.results}))
            raise KeyError(f"{len(found)} results for check {check!r} (table {table!r}); known: {known}")
        return found[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "summary": {
                "expectations": len(self.results),
                "failed_errors": len(self.failures),
                "failed_warnings": len(self.warnings),
            },
            "dataset": self.dataset.to_dict(),
            "expectations": [r.to_dict() for r in self.results],
        }


def results_from_runs(runs: list[TableRun]) -> tuple[ExpectationResult, ...]:
    """One ExpectationResult per check, in the order the checks were defined (GX reorders its results)."""
    out = []
    for run in runs:
        by_key = {r.expectation_config.meta["check"]: r for r in run.result.results}
        for check in run.table.checks:
            out.append(_result(check, run, by_key[check.key]))
    return tuple(out)


def _result(check: Check, run: TableRun, gx_result: Any) -> ExpectationResult:
    info = gx_result.exception_info or {}
    raised = info.get("raised_exception") if isinstance(info, dict) else False
    result = gx_result.result or {}
    positions = result.get("partial_unexpected_index_list") or []
    examples = tuple(_example(run, check, int(p)) for p in positions[:MAX_EXAMPLES])
    return ExpectationResult(
        name=gx_result.expectation_config.type,
        check=check.key,
        table=run.table.name,
        columns=check.columns,
        severity=check.severity,
        passed=bool(gx_result.success) and not raised,
        description=check.description,
        element_count=result.get("element_count"),
        unexpected_count=result.get("unexpected_count"),
        unexpected_percent=_rounded(result.get("unexpected_percent")),
        observed_value=jsonable(result.get("observed_value"), integral=True),
        examples=examples,
        exception=info.get("exception_message") if raised else None,
    )


def _example(run: TableRun, check: Check, position: int) -> Example:
    frame = run.table.frame
    # Derived columns (`<col>__<what>`) hold counts and row numbers: show 312, not 312.0.
    values = {
        col: jsonable(frame[col].iat[position], cut=True, integral="__" in col)
        for col in check.show
        if col in frame.columns
    }
    return Example(int(run.table.rows[position]), MappingProxyType(values))


def _rounded(value: Any) -> float | None:
    return None if value is None else round(float(value), 4)


def jsonable(value: Any, cut: bool = False, integral: bool = False) -> Any:
    """Numpy scalars to Python, NaN to None and inf to a string (JSON has neither), long texts cut when `cut`,
    whole floats to int when `integral`."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, float) and math.isinf(value):
        return str(value)
    if integral and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and cut and len(value) > MAX_VALUE_CHARS:
        return f"{value[:MAX_VALUE_CHARS]}... ({len(value):,} chars)"
    if isinstance(value, (list, tuple)):
        return [jsonable(v, cut) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v, cut) for k, v in value.items()}
    return value
