"""The short text summary `embedgate validate` prints: verdict, failed checks and warnings, where files are."""

from __future__ import annotations

from gates.data_gate.docs import WrittenReport
from gates.data_gate.report import DataGateReport, ExpectationResult

HEADER = ("severity", "table", "check", "column(s)", "offending", "first rows")


def summary_text(report: DataGateReport, written: WrittenReport | None = None) -> str:
    data = report.dataset
    rows = ", ".join(f"{t.name} {t.rows:,}" for t in data.tables)
    verdict = "PASSED" if report.passed else "FAILED"
    lines = [
        f"{verdict}  {data.source}  ({data.dataset_type}; rows: {rows})",
        f"  {len(report.results)} checks: {len(report.failures)} failed errors, "
        f"{len(report.warnings)} warnings",
    ]
    flagged = report.failures + report.warnings
    if flagged:
        table = [HEADER] + [_row(r) for r in flagged]
        widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]
        lines += [
            "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in table
        ]
    lines += [f"  note: {note}" for note in data.notes]
    if written is not None:
        lines.append(f"report: {written.report_json}")
        if written.docs_index is not None:
            lines.append(f"docs:   {written.docs_index.parent / 'summary.html'} (every check; works offline)")
            lines.append(f"        {written.docs_index} (Great Expectations Data Docs)")
    return "\n".join(lines)


def _row(result: ExpectationResult) -> tuple[str, ...]:
    if result.exception:
        offending = f"GX error: {result.exception[:60]}"
    elif result.unexpected_count is not None:
        offending = f"{result.unexpected_count:,} ({result.unexpected_percent:.2f}%)"
    else:
        offending = (
            f"observed {result.observed_value:,}"
            if isinstance(result.observed_value, (int, float))
            else "column missing"
            if result.name == "expect_column_to_exist"
            else str(result.observed_value)
        )
    rows = ", ".join(str(e.row) for e in result.examples)
    return (result.severity, result.table, result.check, ", ".join(result.columns), offending, rows)
