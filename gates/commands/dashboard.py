"""`embedgate dashboard`: the Evidently UI on the drift workspace (a project per model version)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated

import typer

HELP = """Serve the Evidently UI on the drift workspace: one project per model version, with panels for each drift
signal's score against its alarm threshold over time and for the text descriptors. Binds to loopback unless
--host says otherwise (the UI has no login: put it behind your proxy before exposing it). Runs until Ctrl-C.

Examples:

```
embedgate dashboard                                  # EMBEDGATE_DRIFT_DIR/workspace on http://127.0.0.1:8000
embedgate dashboard --workspace drift/workspace --port 8001
embedgate dashboard --drift-dir s3://models/drift    # a local copy of the judge's workspace in the bucket
```
"""


def register(app: typer.Typer) -> None:
    app.command("dashboard", help=HELP)(dashboard)


def dashboard(
    workspace: Annotated[
        Path | None,
        typer.Option(
            help="Evidently workspace folder (default: EMBEDGATE_DRIFT_DIR/workspace, i.e. drift/workspace)."
        ),
    ] = None,
    drift_dir: Annotated[
        str | None,
        typer.Option(
            help="Drift folder or object-store URL whose workspace/ to show (default EMBEDGATE_DRIFT_DIR); a URL's "
            "workspace is copied to EMBEDGATE_DRIFT_CACHE_DIR first (restart to refresh)."
        ),
    ] = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to serve the UI on.")] = 8000,
    host: Annotated[
        str, typer.Option(help="Interface to bind; 127.0.0.1 keeps it on this machine.")
    ] = "127.0.0.1",
) -> None:
    from service.drift.errors import DriftInputError
    from service.drift.settings import DriftSettings
    from service.drift.workspace import DriftWorkspace

    if workspace is None:
        settings = DriftSettings.from_env()
        if drift_dir:
            settings = DriftSettings.model_validate({**settings.model_dump(), "dir": drift_dir})
        if settings.on_object_store:
            from service.drift.object_mirror import pull_for_reading

            pull_for_reading(settings, ("workspace/",))
        workspace = settings.workspace_dir
    if not workspace.is_dir():
        raise DriftInputError(
            f"workspace {workspace} does not exist; it is created when the first drift window is "
            f"judged (`embedgate drift`, or the service's monitor). Pass --workspace DIR."
        )
    projects = DriftWorkspace(workspace).ensure_dashboards()
    if not _is_loopback(host):
        typer.echo(
            f"warning: serving the drift dashboard on {host}, reachable from other machines, without "
            f"authentication",
            err=True,
        )
    typer.echo(
        f"Evidently UI for {workspace} ({projects} drift project(s)) on http://{host}:{port}", err=True
    )
    _serve(workspace, host, port)


def _serve(workspace: Path, host: str, port: int) -> None:
    os.environ.setdefault("DO_NOT_TRACK", "1")  # no usage telemetry from the UI
    from evidently.ui.service.app import get_config, run

    run(get_config(host=host, port=port, workspace=str(workspace)))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
