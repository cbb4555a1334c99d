"""`embedgate promote`, `embedgate rollback`, `embedgate history`: the registry, from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

PROMOTE_HELP = """Promote a gated run: its served artifacts become a new immutable registry version and the
champion, atomically (a running service hot-swaps to it). Refused (exit 1, recorded) if the run's gate did not
pass, unless --force with a --reason.

Examples:

```
embedgate promote artifacts/runs/20261126-120000-ab12cd34
embedgate promote artifacts/runs/20261126-120000-ab12cd34 --force --reason "hotfix approved by on-call"
```
"""
ROLLBACK_HELP = """Make the previous champion the champion again (verified first). One command, recorded.

Examples:

```
embedgate rollback --reason "p99 latency regression"
embedgate rollback --to v0003
```
"""
HISTORY_HELP = """Show the registry's append-only history: every promotion, rollback and refusal.

Example:

```
embedgate history --registry registry
```
"""

Registry = Annotated[Path, typer.Option(help="Registry folder.", envvar="EMBEDGATE_REGISTRY")]


def register(app: typer.Typer) -> None:
    app.command("promote", help=PROMOTE_HELP)(promote)
    app.command("rollback", help=ROLLBACK_HELP)(rollback)
    app.command("history", help=HISTORY_HELP)(history)


def promote(
    run_dir: Annotated[Path, typer.Argument(help="A gated run directory.")],
    registry: Registry = Path("registry"),
    force: Annotated[bool, typer.Option(help="Promote even though the gate failed (needs --reason).")] = False,
    reason: Annotated[str, typer.Option(help="Why (recorded in the history).")] = "",
    no_bento_store: Annotated[bool, typer.Option(help="Skip saving to the BentoML model store.")] = False,
) -> None:
    from gates.promotion import PromotionRefused, promote_run
    from training.run_dir import open_run_dir

    try:
        result = promote_run(open_run_dir(run_dir), registry, force=force, reason=reason,
                             bento_store=not no_bento_store)
    except PromotionRefused as refused:
        typer.echo(f"refused: {refused}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"promoted {result.run_id} as {result.version} (previous champion: {result.previous or 'none'}; "
               f"serving dim {result.serving_dim}; bento model {result.bento_tag or 'not saved'})")
    if result.bento_error:
        typer.echo(f"warning: not saved to the BentoML model store ({result.bento_error}); the registry "
                   f"promotion stands, but `bentoml build` will not package this version", err=True)


def rollback(
    registry: Registry = Path("registry"),
    reason: Annotated[str, typer.Option(help="Why (recorded in the history).")] = "",
    to: Annotated[str | None, typer.Option(help="A specific version (default: the previous champion).")] = None,
    no_bento_store: Annotated[bool, typer.Option(help="Leave BentoML's model store as it is.")] = False,
) -> None:
    from gates.promotion import rollback as do_rollback

    _report_repairs(registry)
    result = do_rollback(registry, reason=reason, to=to, bento_store=not no_bento_store)
    typer.echo(f"rolled back: {result.version} is the champion (previous: {result.previous or 'none'}; "
               f"bento model {result.bento_tag or 'not saved'} is :latest)")
    if result.bento_error:
        typer.echo(f"warning: BentoML's model store not updated ({result.bento_error}); a Bento built now would "
                   f"pack the last promoted version", err=True)


def history(
    registry: Registry = Path("registry"),
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    import json

    from gates.promotion import history as read_history
    from service.registry import Registry as Store

    _report_repairs(registry)
    entries = read_history(registry)
    if as_json:
        for entry in entries:
            typer.echo(json.dumps(entry))
        return
    champion = Store(registry).champion()  # the source of truth, whatever the history says
    typer.echo(f"champion: {champion.version if champion else 'none'}")
    typer.echo(f"{'time':<21} {'action':<11} {'version':<8} {'from':<8} {'who':<12} {'run':<28} reason")
    for e in entries:
        typer.echo(f"{e['time']:<21} {e['action']:<11} {e['version'] or '-':<8} {e['from_version'] or '-':<8} "
                   f"{e['who'][:12]:<12} {(e['run_id'] or '-')[:28]:<28} {e['reason']}")


def _report_repairs(registry: Path) -> None:
    """Repair what an interrupted promotion or rollback left (service.registry.Registry.reconcile) and say so;
    warn about history lines that cannot be read (skipped: the champion and the manifests are the truth)."""
    from service.registry import Registry as Store

    store = Store(registry)
    try:
        repairs = store.reconcile()
    except OSError as err:  # a read-only registry (a mounted copy): read it as it is
        typer.echo(f"warning: cannot take the registry lock ({err}); showing it unrepaired", err=True)
        repairs = []
    for repair in repairs:
        typer.echo(f"repaired: {repair}", err=True)
    store.history()
    for problem in store.history_problems:
        typer.echo(f"warning: {problem}", err=True)
