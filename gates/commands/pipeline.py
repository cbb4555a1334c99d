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
ending with the gate decision table and one call to the served champion.

With --from-base the demo registry starts from the base model as v0001, as if clients had stored its vectors:
the run is gated against it and also answers in its space (`champion@v0001`), the upgrade without re-embedding
(docs/versions.md; a minute or two more). A second run into the same registry is gated against the first's
champion: an identical candidate is blocked, which is the gate working.

Examples:

```
embedgate demo
embedgate demo --from-base --out artifacts/demo-upgrade
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
    from_base: Annotated[
        bool,
        typer.Option(
            "--from-base",
            help="Start an empty demo registry from the base model (v0001): the run also answers in its space.",
        ),
    ] = False,
) -> None:
    registry = out / "registry"
    if from_base:
        _start_from_base(registry)
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
    from service.registry.registry import Registry
    from service.versions.compat_spaces import spaces_in_manifest

    store = Registry(registry)
    champion = store.champion()
    spaces = spaces_in_manifest(store.manifest(champion.version)) if champion else ()
    call = call_served_champion(registry, DEMO_QUERIES, log_path=out / "serve.log", spaces=spaces)
    typer.echo(f"[serve] {call.summary()}")
    for name, answered in call.spaces:
        space = name.split("@", 1)[1].split(":", 1)[0]
        typer.echo(
            f"[serve] clients holding {space} vectors ask for {name}: answered by {answered}, in {space}'s space "
            f"(no re-embedding)"
        )


def _start_from_base(registry: Path) -> None:
    """An empty demo registry gets the base model as v0001 (gates/base_version.py); one with versions is left as
    it is (a second --from-base run continues from its champion)."""
    import yaml

    from gates.base_version import register_base
    from service.registry.registry import Registry

    if Registry(registry).versions():
        typer.echo(f"[demo] {registry} already has versions: continuing from its champion")
        return
    base_model = yaml.safe_load(DEMO_CONFIG.read_text())["base_model"]
    base = register_base(registry, base_model, who="embedgate demo")
    typer.echo(
        f"[demo] registered the base model {base_model} as {base.version} (serving dim {base.serving_dim}): "
        f"the clients' stored vectors"
    )
