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
        lines.append(_line(HEADER, widths))
        # Each flagged row is followed by its rule: "observed 1,893" means nothing without "at least 2,000 pairs".
        rule_indent = " " * (2 + widths[0] + 2)
        for row, result in zip(table[1:], flagged, strict=True):
            lines += [_line(row, widths), f"{rule_indent}expected: {result.description}"]
    lines += [f"  note: {note}" for note in data.notes]
    if written is not None:
        lines.append(f"report: {written.report_json}")
        if written.docs_index is not None:
            lines.append(f"docs:   {written.docs_index.parent / 'summary.html'} (every check; works offline)")
            lines.append(f"        {written.docs_index} (Great Expectations Data Docs)")
    return "\n".join(lines)


def _line(cells: tuple[str, ...], widths: list[int]) -> str:
    return "  " + "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip()


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
