"""Run `CheckTable`s through Great Expectations 1.x: one ephemeral context per gate run, one pandas data
source, and per table a dataframe asset, an `ExpectationSuite` and a `ValidationDefinition`.

Tables are validated one `ValidationDefinition.run` at a time rather than through one `Checkpoint`: a
Checkpoint passes the same `batch_parameters` (the dataframe) to every definition, and our tables differ.
The suites and results are kept so Data Docs can be rendered later (docs.py).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from gates.data_gate.checks import CheckTable

# SUMMARY keeps results small at 100k rows (COMPLETE returns every unexpected value) and still gives
# the first offending positions, which report.py turns into row numbers.
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 5}


@dataclass(frozen=True)
class TableRun:
    table: CheckTable
    suite: Any  # great_expectations.ExpectationSuite
    result: Any  # great_expectations ExpectationSuiteValidationResult


def gx_name(text: str) -> str:
    """GX names become file names in Data Docs: keep them to [a-z0-9_.-]."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "table"


def quiet_context():
    """An ephemeral GX context with analytics and progress bars off (they write to stderr on every run)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import logging

    import great_expectations as gx

    # GX logs every temporary docs folder at INFO; a pipeline that set INFO for its own logs would show them all.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    return context


def run_tables(tables: list[CheckTable], dataset_name: str) -> list[TableRun]:
    import great_expectations as gx

    context = quiet_context()
    source = context.data_sources.add_pandas(gx_name(dataset_name))
    runs = []
    for table in tables:
        name = gx_name(f"{dataset_name}.{table.name}")
        batch = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe("whole_table")
        suite = context.suites.add(
            gx.ExpectationSuite(name=name, expectations=[ck.build() for ck in table.checks])
        )
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=suite)
        )
        result = definition.run(batch_parameters={"dataframe": table.frame}, result_format=RESULT_FORMAT)
        runs.append(TableRun(table, suite, result))
    return runs
