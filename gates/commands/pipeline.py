"""`embedgate pipeline` (every stage, promote on pass) and `embedgate demo` (the pipeline on the embedded set)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

PIPELINE_HELP = """Run the gated path: data gate -> mine -> train -> export -> evaluate -> gate -> promote on pass.
Exit 0 promoted, 1 blocked (the reason is printed), 2 error. Every stage's output stays in the run directory.

Examples:

```
embedgate pipeline gates/demo.yaml
embedgate pipeline gates/demo.yaml --set epochs=3 --set promotion.registry=/srv/embedgate/registry
embedgate pipeline gates/demo.yaml --set device=cuda:0 --quiet
```

Embeddings are cached in `cache.dir` (default: `cache` beside `output_dir`), so an unchanged baseline is not
encoded again by the next run; after each run the cache is pruned, least recently used first, to `cache.max_gb`
and `cache.max_age_days` (`embedgate cache info / prune`). `device` (or $EMBEDGATE_DEVICE): auto, cpu, cuda or
cuda:N; on a CUDA device the export also writes fp16 graphs (`export.fp16`, kept where they keep parity).
"""
DEMO_HELP = """The whole pipeline on the embedded lay-vs-legal retrieval set (4-12 minutes on 2 CPU cores),
ending with the gate decision table.

Example:

```
embedgate demo
```
"""

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "demo.yaml"


def register(app: typer.Typer) -> None:
    app.command("pipeline", help=PIPELINE_HELP)(pipeline)
    app.command("demo", help=DEMO_HELP)(demo)


DEMO_QUERIES = [
    "my landlord won't give back my deposit after I moved out",
    "can I be fired for refusing to sign a non-compete?",
]


def _run(
    config_path: Path, sets: list[str] | None, overrides: dict | None = None, quiet: bool = False
) -> int:
    from gates.commands.train import parse_set
    from gates.pipeline.config import load_pipeline_config
    from gates.pipeline.run import run_pipeline

    config = load_pipeline_config(config_path, {**(overrides or {}), **parse_set(sets)})
    outcome = run_pipeline(config, progress=(lambda _: None) if quiet else typer.echo, quiet=quiet)
    typer.echo("")
    typer.echo(f"run: {outcome.run_dir}")
    for stage in outcome.stages:
        typer.echo(f"  {stage.name:<16} {stage.status:<8} {stage.seconds:8.1f}s")
    verdict = {"promoted": "PROMOTED", "passed": "PASSED (not promoted)", "blocked": "BLOCKED"}.get(
        outcome.status, "ERROR"
    )
    typer.echo(f"{verdict}: {outcome.reason}", err=outcome.exit_code != 0)
    return outcome.exit_code


def pipeline(
    config: Annotated[
        Path,
        typer.Argument(
            help="Pipeline YAML: training fields + export/evaluation/gate/"
            "promotion sections (see gates/demo.yaml)."
        ),
    ],
    sets: Annotated[list[str] | None, typer.Option("--set", help="Override any field: key=value.")] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only the final stage table and verdict.")
    ] = False,
) -> None:
    code = _run(config, sets, quiet=quiet)
    if code:
        raise typer.Exit(code=code)


def demo(
    out: Annotated[Path, typer.Option(help="Folder for runs and the demo registry.")] = Path(
        "artifacts/demo"
    ),
    sets: Annotated[list[str] | None, typer.Option("--set", help="Override any field: key=value.")] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only the final stage table and verdict.")
    ] = False,
) -> None:
    registry = out / "registry"
    code = _run(
        DEMO_CONFIG, sets, {"output_dir": str(out / "runs"), "promotion.registry": str(registry)}, quiet=quiet
    )
    if code == 2:
        raise typer.Exit(code=2)
    if code == 1:
        typer.echo(
            "(the demo's candidate did not beat the current demo champion: that is the gate working; "
            f"delete {out} to start the demo from the base model again)"
        )
    from gates.pipeline.served_call import call_served_champion

    typer.echo("\n[serve] starting the service on the champion and calling it with the openai client ...")
    call = call_served_champion(registry, DEMO_QUERIES, log_path=out / "serve.log")
    typer.echo(f"[serve] {call.summary()}")
