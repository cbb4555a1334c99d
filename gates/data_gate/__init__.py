"""The data gate: Great Expectations 1.x suites per dataset type, run on a loaded dataset before training.

    from training.data.loading import load_dataset
    from gates.data_gate import validate_dataset, write_report
    report = validate_dataset(load_dataset("path/to/scifact")  # a BEIR folder or a table)
    report.passed, [r.check for r in report.failures]
    write_report(report, "artifacts/data-gate/scifact")

CLI: `embedgate validate PATH [--type T] [--columns canonical=source,...] [--eval PATH] [--out DIR]`.
"""

from __future__ import annotations

from gates.data_gate.docs import WrittenReport, write_report
from gates.data_gate.errors import DataGateError
from gates.data_gate.gate import validate_dataset
from gates.data_gate.report import DataGateReport, DatasetSummary, ExpectationResult

__all__ = [
    "DataGateError",
    "DataGateReport",
    "DatasetSummary",
    "ExpectationResult",
    "WrittenReport",
    "validate_dataset",
    "write_report",
]
