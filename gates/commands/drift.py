"""`embedgate drift`: judge the captured windows against each version's reference; exit 1 while the served
version has drifted for EMBEDGATE_DRIFT_ALERT_WINDOWS windows in a row (so a scheduler can trigger re-training)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

HELP = """Judge captured traffic windows that have no verdict yet (or --window ID, or --all again): an Evidently
report per window (embedding drift, retrieval drop, novel-row share, descriptor drift), a JSON summary in
DRIFT_DIR/summaries and a snapshot in DRIFT_DIR/workspace (see `embedgate dashboard`). Exit 0 no alert, 1 the
served version drifted in its last ALERT_WINDOWS judged windows, 2 an error.

Examples:

```
embedgate drift                                  # EMBEDGATE_DRIFT_DIR (default drift), registry/
embedgate drift --registry registry --all --json
embedgate drift --list                           # verdicts so far, nothing computed
embedgate drift --registry s3://models/embedgate --drift-dir s3://models/drift   # every replica's windows
```
"""


def register(app: typer.Typer) -> None:
    app.command("drift", help=HELP)(drift)


def drift(
    registry: Annotated[
        str,
        typer.Option(
            envvar="EMBEDGATE_REGISTRY",
            help="Registry root (or s3://bucket/prefix) holding each version's reference/.",
        ),
    ] = Path("registry"),
    drift_dir: Annotated[
        str | None,
        typer.Option(
            help="Drift folder (windows/, summaries/, workspace/) or object-store URL (s3://bucket/drift); "
            "default EMBEDGATE_DRIFT_DIR or drift."
        ),
    ] = None,
    window: Annotated[
        list[str] | None,
        typer.Option(help="Judge this window id again (repeatable); ids are listed by --list."),
    ] = None,
    all_windows: Annotated[bool, typer.Option("--all", help="Judge every kept window again.")] = False,
    list_only: Annotated[
        bool, typer.Option("--list", help="Show the verdicts so far; compute nothing.")
    ] = False,
    alert_windows: Annotated[
        int | None,
        typer.Option(
            min=1, help="Drifted windows in a row that alert (default EMBEDGATE_DRIFT_ALERT_WINDOWS or 3)."
        ),
    ] = None,
    snapshots: Annotated[
        bool,
        typer.Option("--snapshots/--no-snapshots", help="Write an Evidently snapshot per judged window."),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    from service.drift.errors import DriftInputError
    from service.drift.runner import DriftRunResult, alert_states, run_drift, served_version
    from service.drift.settings import DriftSettings
    from service.drift.windows import list_windows

    if window and all_windows:
        raise DriftInputError(f"--window {window} and --all both choose windows; pass one of them")
    settings = DriftSettings.from_env()
    overrides = {"dir": drift_dir} if drift_dir else {}
    if alert_windows:
        overrides["alert_windows"] = alert_windows
    settings = DriftSettings.model_validate({**settings.model_dump(), **overrides})  # a URL stays a URL
    if list_only:
        if settings.on_object_store:
            from service.drift.object_mirror import pull_for_reading

            pull_for_reading(settings, ("summaries/",))
        result = DriftRunResult(
            (),
            (),
            alert_states(settings.summaries_dir, settings.alert_windows),
            served_version(registry, list_windows(settings.windows_dir)),
        )
    else:
        result = run_drift(
            settings, registry, window_ids=window or None, recompute=all_windows, write_snapshots=snapshots
        )
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        _print(result, settings)
    if result.alerting:
        raise typer.Exit(1)


def _print(result, settings) -> None:
    from service.drift.runner import read_summaries

    shown = result.computed or tuple(read_summaries(settings.summaries_dir))
    from service.drift.signals import SIGNALS

    typer.echo(f"{'window':<40} {'rows':>5} " + " ".join(f"{name:>15}" for name in SIGNALS) + "  verdict")
    for window in shown:
        cells = []
        for name in SIGNALS:
            signal = window.signal(name)
            cells.append(
                "-"
                if signal is None or signal.score is None
                else f"{signal.score:.3f}/{signal.threshold:.3f}{'*' if signal.drifted else ''}"
            )
        verdict = (
            f"skipped: {window.skipped_reason}" if window.skipped else ("DRIFT" if window.drifted else "ok")
        )
        typer.echo(
            f"{window.window_id:<40} {window.rows:>5} "
            + " ".join(f"{cell:>15}" for cell in cells)
            + f"  {verdict}"
        )
    if not shown:
        typer.echo(
            f"(no judged windows in {settings.dir}; windows fill at EMBEDGATE_DRIFT_WINDOW_ROWS="
            f"{settings.window_rows} captured rows)"
        )
    for failure in result.failed:
        typer.echo(f"failed {failure.window_id}: {failure.error}", err=True)
    for state in result.alerts:
        served = " (served)" if state.model_version == result.served_version else ""
        status = "ALERT" if state.alerting else "ok"
        typer.echo(
            f"{state.model_version}{served}: {state.consecutive} drifted window(s) in a row, alert at "
            f"{state.alert_windows}: {status}"
        )
