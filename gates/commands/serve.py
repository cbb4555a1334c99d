"""`embedgate serve`: start the embedding service (`bentoml serve service.app:EmbedgateService`) with flags instead
of EMBEDGATE_* variables. The process handling lives in gates/serve_process.py."""

from __future__ import annotations

from typing import Annotated

import typer

from gates.serve_process import SERVICE

HELP = f"""Serve the registry's champion over HTTP (OpenAI-compatible /v1/embeddings, TEI-style /embed, /health,
/ready, /info, /metrics), hot-swapping to each new champion. Wraps `bentoml serve {SERVICE}`; every other setting
is an EMBEDGATE_* environment variable (docs/serving.md). SIGTERM or Ctrl-C drains in-flight requests
(EMBEDGATE_DRAIN_TIMEOUT_S) and stops every server process; exit 0 then, 2 on a bad setting, else bentoml's
exit code.

Examples:

```
embedgate serve --registry registry --port 3000
MY_KEY=s3cret embedgate serve --api-key-env MY_KEY --workers 2 --precision int8
EMBEDGATE_DEVICE=cuda embedgate serve --http-workers 8     # HTTP apart from the model (a GPU host)
```
"""


def register(app: typer.Typer) -> None:
    app.command("serve", help=HELP)(serve)


def serve(
    registry: Annotated[
        str | None,
        typer.Option(
            help="Registry root or object-store URL, s3://bucket/prefix (default: $EMBEDGATE_REGISTRY, else ./registry if it exists, else the BentoML model "
            "store's embedgate-embedder:latest)."
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Interface to bind; 0.0.0.0 to accept other machines.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 3000,
    api_key_env: Annotated[
        str | None,
        typer.Option(
            help="Name of the environment variable holding the API key (the key itself never goes on the command "
            "line, where `ps` would show it)."
        ),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes, each with its own model copy.")] = 1,
    http_workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Split mode: this many HTTP worker processes (HTTP, JSON, tokenising) in front of one model "
            "process that runs the graph; for machines with more cores than the model needs (a GPU host). "
            "Default: one process does both, faster on a few cores (docs/serving.md).",
        ),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="fp32, int8 or fp16 (default: the version's serve_precision); fp16 needs an export made "
            "with --fp16 and is meant for EMBEDGATE_DEVICE=cuda."
        ),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="onnxruntime threads per worker (default: cores / workers).")
    ] = None,
    poll_interval: Annotated[
        float | None, typer.Option(help="Seconds between checks of the champion pointer (default 5).")
    ] = None,
) -> None:
    from gates.serve_process import run_until_stopped, serve_command
    from service.settings import ServeSettings

    argv, env = serve_command(
        registry=registry,
        host=host,
        port=port,
        api_key_env=api_key_env,
        workers=workers,
        precision=precision,
        threads=threads,
        poll_interval=poll_interval,
        http_workers=http_workers,
    )
    drain_timeout_s = ServeSettings.from_env(env).drain_timeout_s
    typer.echo(
        f"serving on http://{host}:{port} (docs/serving.md); Ctrl-C or SIGTERM stops it after in-flight "
        f"requests finish (at most {drain_timeout_s:g} s, EMBEDGATE_DRAIN_TIMEOUT_S)",
        err=True,
    )
    raise typer.Exit(code=run_until_stopped(argv, env, drain_timeout_s))
