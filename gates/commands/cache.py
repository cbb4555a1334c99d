"""`embedgate cache info` / `embedgate cache prune`: what the embedding cache holds, and bounding it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

INFO_HELP = """Show what the cache folder holds: embeddings (one .npy per graph, backend and text set) and cached
base-model exports, with their sizes and the oldest and newest last use. Nothing is changed.

Examples:

```
embedgate cache info
embedgate cache info --dir /mnt/ci-cache/embedgate --json
```
"""
PRUNE_HELP = """Bound the cache folder: remove entries not used for --max-age-days, then the least recently used
until the total is within --max-gb (a hit renews an entry's last use). Everything in the cache is rebuilt on demand,
so pruning only costs a later re-encode. The pipeline prunes with cache.max_gb / cache.max_age_days after every run.

Examples:

```
embedgate cache prune
embedgate cache prune --max-gb 0.5 --max-age-days 7 --dry-run
embedgate cache prune --dir /mnt/ci-cache/embedgate --no-max-age
```
"""

Dir = Annotated[
    Path,
    typer.Option(
        "--dir",
        help="The cache folder (cache.dir; the pipeline's default is artifacts/cache beside artifacts/runs).",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="Inspect and bound the embedding cache (docs/performance.md).", no_args_is_help=True
    )
    group.command("info", help=INFO_HELP)(info)
    group.command("prune", help=PRUNE_HELP)(prune)
    app.add_typer(group, name="cache")


def info(cache_dir: Dir = Path("artifacts/cache"), as_json: AsJson = False) -> None:
    from gates.cache_prune import cache_info

    found = cache_info(cache_dir).to_dict()
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    if not found["entries"]:
        typer.echo(f"cache {cache_dir}: empty")
        return
    typer.echo(f"cache {cache_dir}: {found['entries']} entries, {found['bytes'] / 1e6:.1f} MB")
    for kind in ("embeddings", "exports"):
        typer.echo(f"  {kind}: {found[kind]['entries']} ({found[kind]['bytes'] / 1e6:.1f} MB)")
    typer.echo(f"  last used: oldest {found['least_recently_used']}, newest {found['most_recently_used']}")


def prune(
    cache_dir: Dir = Path("artifacts/cache"),
    max_gb: Annotated[
        float | None, typer.Option(help="Keep at most this many GB (least recently used go first).")
    ] = 2.0,
    max_age_days: Annotated[
        float | None, typer.Option(help="Remove entries not used for this many days.")
    ] = 30.0,
    no_max_gb: Annotated[bool, typer.Option("--no-max-gb", help="No size bound.")] = False,
    no_max_age: Annotated[bool, typer.Option("--no-max-age", help="No age bound.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go; remove nothing.")] = False,
    as_json: AsJson = False,
) -> None:
    from gates.cache_prune import CacheBounds, prune_cache

    bounds = CacheBounds(None if no_max_gb else max_gb, None if no_max_age else max_age_days)
    if not cache_dir.exists():
        typer.echo(f"cache {cache_dir}: no such folder, nothing to prune")
        return
    result = prune_cache(cache_dir, bounds, dry_run=dry_run)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    typer.echo(result.summary())
    for item, why in result.removed:
        typer.echo(
            f"  {'would remove' if dry_run else 'removed'} {item.kind} {item.name} "
            f"({item.size_bytes / 1e6:.1f} MB, last used {item.to_dict()['last_used']}, {why})"
        )
    if result.leftovers:
        typer.echo(
            f"  {len(result.leftovers)} leftover temp file(s)/folder(s) of killed writes "
            f"{'would be ' if dry_run else ''}removed"
        )
