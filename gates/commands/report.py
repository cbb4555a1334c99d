"""`embedgate report RUN`: (re)build the run's self-contained report.html and print its path."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

REPORT_HELP = """Build RUN/report.html: data gate, training curves and advice, candidate vs baseline per dim and
backend, the gate decision with its significance figures, promotion and stage timings. One file, works offline
(plots inlined, nothing fetched). The pipeline writes it at the end of every run; this rebuilds it.

Example:

```
embedgate report artifacts/runs/20261126-120000-ab12cd34
```
"""


def register(app: typer.Typer) -> None:
    app.command("report", help=REPORT_HELP)(report)


def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (artifacts/runs/<run_id>).")],
) -> None:
    from gates.pipeline.run_report import build_report
    from training.run_dir import open_run_dir

    typer.echo(str(build_report(open_run_dir(run_dir))))
