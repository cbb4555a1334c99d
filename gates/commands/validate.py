"""`embedgate validate`: run the data gate on a dataset file or BEIR folder, write report.json + Data Docs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

HELP = """Validate a dataset with Great Expectations before training: exit 0 if it passes, 1 if a check of
severity *error* fails (warnings never fail), 2 if the input cannot be read.

Writes `report.json` (every expectation with offending row numbers) and Data Docs HTML (`docs/index.html`).

Example:

```
embedgate validate pairs.csv --columns anchor=question1,positive=question2 --eval eval.csv
```
"""


def register(app: typer.Typer) -> None:
    app.command("validate", help=HELP)(validate)


def validate(
    path: Annotated[
        Path,
        typer.Argument(
            help="A CSV, TSV, JSONL or Parquet table, a BEIR folder (IR), a datasets save_to_disk folder, or hf://owner/name (a Hub dataset)."
        ),
    ],
    dataset_type: Annotated[
        str | None,
        typer.Option(
            "--type",
            help="pairs, triplets, sts, nli, ir or hard_negatives (default: detected from the columns).",
        ),
    ] = None,
    columns: Annotated[
        str | None,
        typer.Option(
            help="Map your column names: canonical=source pairs, e.g. anchor=question1,positive=question2."
        ),
    ] = None,
    eval_path: Annotated[
        Path | None,
        typer.Option(
            "--eval", help="An eval set of any type: its queries/anchors must not appear in PATH (leakage)."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for report.json and docs/ (default: artifacts/data-gate/NAME, NAME the file or folder name)."
        ),
    ] = None,
    max_seq_length: Annotated[
        int | None,
        typer.Option(
            help="Tokens before truncation (default: the tokenizer model's max_seq_length, else 256)."
        ),
    ] = None,
    tokenizer: Annotated[
        Path | None,
        typer.Option(help="Model folder holding tokenizer.json (default: the bundled all-MiniLM-L6-v2)."),
    ] = None,
) -> None:
    from gates.commands.data_settings import FLAGS, fixes_named_for
    from gates.data_gate import validate_dataset, write_report
    from gates.data_gate.console import summary_text
    from training.data.loading import load_dataset

    with fixes_named_for(FLAGS, path):
        data = load_dataset(path, dataset_type, columns)
        eval_data = load_dataset(eval_path) if eval_path is not None else None
    report = validate_dataset(data, eval_data=eval_data, max_seq_length=max_seq_length, tokenizer=tokenizer)
    written = write_report(report, out or Path("artifacts") / "data-gate" / (path.stem or path.name))
    typer.echo(summary_text(report, written))
    if not report.passed:
        raise typer.Exit(code=1)
