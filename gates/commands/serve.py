"""`embedgate serve`: start the embedding service (`bentoml serve service.app:EmbedgateService`) with flags instead
of EMBEDGATE_* variables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

SERVICE = "service.app:EmbedgateService"
HELP = f"""Serve the registry's champion over HTTP (OpenAI-compatible /v1/embeddings, TEI-style /embed, /health,
/ready, /info, /metrics), hot-swapping to each new champion. Wraps `bentoml serve {SERVICE}`; every other setting
is an EMBEDGATE_* environment variable (docs/serving.md). Exit 2 on a bad setting, else bentoml's exit code.

Examples:

```
embedgate serve --registry registry --port 3000
MY_KEY=s3cret embedgate serve --api-key-env MY_KEY --workers 2 --precision int8
```
"""


def register(app: typer.Typer) -> None:
    app.command("serve", help=HELP)(serve)


def serve(
    registry: Annotated[Path | None, typer.Option(
        help="Registry root (default: $EMBEDGATE_REGISTRY, else ./registry if it exists, else the BentoML model "
             "store's embedgate-embedder:latest).")] = None,
    host: Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 to accept other machines.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 3000,
    api_key_env: Annotated[str | None, typer.Option(
        help="Name of the environment variable holding the API key (the key itself never goes on the command "
             "line, where `ps` would show it).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes, each with its own model copy.")] = 1,
    precision: Annotated[str | None, typer.Option(
        help="fp32 or int8 (default: the version's serve_precision).")] = None,
    threads: Annotated[int | None, typer.Option(
        min=1, help="onnxruntime threads per worker (default: cores / workers).")] = None,
    poll_interval: Annotated[float | None, typer.Option(
        help="Seconds between checks of the champion pointer (default 5).")] = None,
) -> None:
    argv, env = serve_command(registry=registry, host=host, port=port, api_key_env=api_key_env, workers=workers,
                              precision=precision, threads=threads, poll_interval=poll_interval)
    typer.echo(f"serving on http://{host}:{port} (docs/serving.md); Ctrl-C stops", err=True)
    try:
        code = subprocess.call(argv, env=env)
    except KeyboardInterrupt:  # the server got the same SIGINT and shuts down by itself
        code = 130
    raise typer.Exit(code=code)


def serve_command(*, registry: Path | None, host: str, port: int, api_key_env: str | None, workers: int,
                  precision: str | None, threads: int | None, poll_interval: float | None,
                  environ: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The `bentoml serve` command line and its environment, settings checked first (SettingsError names them)."""
    from service.settings import ServeSettings, SettingsError

    env = dict(os.environ if environ is None else environ)
    if registry is not None:
        env["EMBEDGATE_REGISTRY"] = str(registry.resolve())
    if api_key_env is not None:
        key = env.get(api_key_env, "").strip()
        if not key:
            raise SettingsError(f"--api-key-env {api_key_env}: that environment variable is unset or empty; "
                                f"export it first (export {api_key_env}=...) or drop --api-key-env")
        env["EMBEDGATE_API_KEY"] = key
    if precision is not None:
        env["EMBEDGATE_PRECISION"] = precision
    if poll_interval is not None:
        env["EMBEDGATE_POLL_INTERVAL_S"] = str(poll_interval)
    if threads is not None:
        env["EMBEDGATE_THREADS"] = str(threads)
    elif workers > 1 and not env.get("EMBEDGATE_THREADS"):
        # Each worker runs its own onnxruntime session: share the cores instead of oversubscribing them.
        env["EMBEDGATE_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    options = env.get("BENTOML_CONFIG_OPTIONS", "")
    env["BENTOML_CONFIG_OPTIONS"] = f"{options} services.embedgate.workers={workers}".strip()
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    ServeSettings.from_env(env)  # fail here, with the variable named, rather than in every worker
    argv = [sys.executable, "-m", "bentoml", "serve", SERVICE, "--host", host, "--port", str(port)]
    return argv, env
