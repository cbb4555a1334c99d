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
CUTOVER_HELP = """Move the `champion` alias to a version (verified first): clients that omit `model` get it from
the next poll on; clients pinned to a version (`model: v0002`) keep theirs. Refused (exit 1, recorded) when the
version's default dimensions differ from the champion's, unless --allow-dim-change. `embedgate rollback` undoes it.

Examples:

```
embedgate cutover v0003
embedgate cutover v0003 --allow-dim-change --reason "corpus re-embedded at 128d"
```
"""
RETIRE_HELP = """Stop serving a version by name: requests naming it get 404 (the service unloads it at its next
poll). The champion and the candidate cannot be retired; the files stay in the registry.

Example:

```
embedgate retire v0001 --reason "no client pins it any more"
```
"""
HISTORY_HELP = """Show the registry's append-only history: every promotion, rollback and refusal.

Example:

```
embedgate history --registry registry
```
"""

REGISTER_BASE_HELP = """Start an empty registry from the model clients use today: the base model, exported as
every version is (fp32 and int8, its Matryoshka dims), becomes v0001 and the champion, recorded as not gated. The
first fine-tuned run is then gated against it, and its compatibility stage lets clients who stored the base
model's vectors query with `champion@v0001` and get the fine-tuned model's gain without re-embedding
(docs/versions.md). Refused (exit 1) on a registry that already has versions.

Examples:

```
embedgate register-base all-MiniLM-L6-v2 --registry registry
embedgate register-base path/to/sentence-transformers-folder --registry s3://models/embedgate --dims 384,256 --serving-dim 256
```
"""
BUILD_BENTO_HELP = """Build a Bento that carries the registry's champion: saves it to BentoML's model store under
this registry's own name and packs exactly that tag (BentoML's store is shared by every registry on the machine,
so its `:latest` may be another registry's). The Bento serves it with no registry mounted.

Examples:

```
embedgate build-bento --registry registry
embedgate build-bento --registry s3://models/embedgate
```
"""

Registry = Annotated[
    str,
    typer.Option(
        help="Registry folder, or an object-store URL such as s3://bucket/prefix (docs/registry.md).",
        envvar="EMBEDGATE_REGISTRY",
    ),
]
Reason = Annotated[str, typer.Option(help="Why (recorded in the history).")]
# One flag, named explicitly: a bool parameter called no_bento_store would also get --no-no-bento-store.
NoBentoStore = Annotated[
    bool,
    typer.Option(
        "--no-bento-store",
        help="Do not save the champion to the BentoML model store (`embedgate build-bento` packs it from there).",
    ),
]
AllowDimChange = Annotated[bool, typer.Option(help="Allow a different default `dimensions` (recorded).")]
WebhookUrl = Annotated[
    str | None,
    typer.Option(
        help="POST the event here, signed with HMAC-SHA256 of $EMBEDGATE_WEBHOOK_SECRET (docs/versions.md).",
        envvar="EMBEDGATE_WEBHOOK_URL",
    ),
]


def register(app: typer.Typer) -> None:
    app.command("promote", help=PROMOTE_HELP)(promote)
    app.command("rollback", help=ROLLBACK_HELP)(rollback)
    app.command("cutover", help=CUTOVER_HELP)(cutover)
    app.command("retire", help=RETIRE_HELP)(retire)
    app.command("history", help=HISTORY_HELP)(history)
    app.command("build-bento", help=BUILD_BENTO_HELP)(build_bento)
    app.command("register-base", help=REGISTER_BASE_HELP)(register_base)


def _webhook(url: str | None):
    from gates.promotion_events import Webhook

    return Webhook.from_config(url)


def _report_webhook(error: str | None) -> None:
    if error:
        typer.echo(
            f"warning: promotion event not delivered ({error}); recorded in the history, the registry "
            f"change stands",
            err=True,
        )


def promote(
    run_dir: Annotated[Path, typer.Argument(help="A gated run directory.")],
    registry: Registry = Path("registry"),
    force: Annotated[
        bool,
        typer.Option(
            help="Promote even though the gate failed or compared the run with another model than the current champion (needs --reason)."
        ),
    ] = False,
    reason: Reason = "",
    no_bento_store: NoBentoStore = False,
    staged: Annotated[
        bool,
        typer.Option(
            help="Stage it: servable by name and as `candidate`; the champion moves with `embedgate cutover`."
        ),
    ] = False,
    webhook: WebhookUrl = None,
) -> None:
    from gates.promotion import PromotionRefused, promote_run
    from training.run_dir import open_run_dir

    hook = _webhook(webhook)  # a bad URL or a missing secret stops here, before anything is promoted
    try:
        result = promote_run(
            open_run_dir(run_dir),
            registry,
            force=force,
            reason=reason,
            bento_store=not no_bento_store,
            mode="staged" if staged else "immediate",
            webhook=hook,
        )
    except PromotionRefused as refused:
        typer.echo(f"refused: {refused}", err=True)
        raise typer.Exit(code=1) from None
    if result.alias == "candidate":
        typer.echo(
            f"staged {result.run_id} as {result.version} (the candidate; champion stays "
            f"{result.previous or 'none'}; serving dim {result.serving_dim}; re-embedding needed to switch: "
            f"{'yes' if result.reembed_required else 'no'}); when clients are ready: embedgate cutover "
            f"{result.version}"
        )
    else:
        typer.echo(
            f"promoted {result.run_id} as {result.version} (previous champion: "
            f"{result.previous or 'none'}; serving dim {result.serving_dim}; bento model "
            f"{result.bento_tag or 'not saved'}; clients must re-embed: "
            f"{'yes' if result.reembed_required else 'no'})"
        )
    for old in result.compatible_spaces:  # stored vectors that gain without re-embedding (docs/versions.md)
        typer.echo(
            f"  clients holding {old} vectors: query with model {result.version}@{old} (or champion@{old}) "
            f"to get {result.version}'s gain without re-embedding"
        )
    for dropped in result.compat_dropped:
        typer.echo(f"warning: compatible space {dropped}", err=True)
    _report_webhook(result.webhook_error)
    _warn_without_drift_reference(registry, result.version, run_dir)
    if result.bento_error:
        typer.echo(
            f"warning: not saved to the BentoML model store ({result.bento_error}); the registry "
            f"promotion stands, and `embedgate build-bento` saves the champion there when it builds",
            err=True,
        )


def _warn_without_drift_reference(registry: str | Path, version: str, run_dir: Path) -> None:
    """A version without reference/ is served but never judged for drift; the service would say so only in its log."""
    from service.registry.registry import Registry as Store

    files = Store(registry).manifest(version)["files"]
    if not any(name.startswith("reference/") for name in files):
        typer.echo(
            f"warning: {version} carries no drift reference ({run_dir / 'reference'} did not exist), so the "
            f"service will not monitor it for drift; `embedgate pipeline` builds the reference before it "
            f"promotes (docs/drift.md)",
            err=True,
        )


def rollback(
    registry: Registry = Path("registry"),
    reason: Reason = "",
    to: Annotated[
        str | None, typer.Option(help="A specific version (default: the previous champion).")
    ] = None,
    allow_dim_change: AllowDimChange = False,
    no_bento_store: NoBentoStore = False,
    webhook: WebhookUrl = None,
) -> None:
    from gates.promotion import rollback as do_rollback
    from service.registry.aliases import RollbackRefused

    _report_repairs(registry)
    try:
        result = do_rollback(
            registry,
            reason=reason,
            to=to,
            allow_dim_change=allow_dim_change,
            bento_store=not no_bento_store,
            webhook=_webhook(webhook),
        )
    except RollbackRefused as refused:
        typer.echo(f"refused: {refused}", err=True)
        raise typer.Exit(code=1) from None
    further = (
        f"a further rollback goes to {result.previous}"
        if result.previous
        else f"{result.version} was the first champion: `embedgate rollback --to VERSION` serves another"
    )
    typer.echo(
        f"rolled back: {result.version} is the champion (was {result.rolled_back_from}; "
        f"{_dims_note(result.previous_dim, result.serving_dim, result.dim_changed)}; clients must re-embed: "
        f"{'yes' if result.reembed_required else 'no'}"
        + (f"; bento model {result.bento_tag}" if result.bento_tag else "")
        + f"); {further}"
    )
    _report_webhook(result.webhook_error)
    if result.bento_error:
        typer.echo(
            f"warning: BentoML's model store not updated ({result.bento_error}); `embedgate build-bento` "
            f"saves the champion there when it builds",
            err=True,
        )


def _dims_note(old: int | None, new: int | None, changed: bool) -> str:
    return f"default dimensions {old} -> {new}, allowed" if changed else f"default dimensions {new}"


def cutover(
    version: Annotated[str, typer.Argument(help="The version to serve as the champion, e.g. v0003.")],
    registry: Registry = Path("registry"),
    allow_dim_change: AllowDimChange = False,
    reason: Reason = "",
    no_bento_store: NoBentoStore = False,
    webhook: WebhookUrl = None,
) -> None:
    from gates.promotion import cutover as do_cutover
    from service.registry.aliases import CutoverRefused

    hook = _webhook(webhook)
    try:
        outcome = do_cutover(
            registry,
            version,
            allow_dim_change=allow_dim_change,
            reason=reason,
            bento_store=not no_bento_store,
            webhook=hook,
        )
    except CutoverRefused as refused:
        typer.echo(f"refused: {refused}", err=True)
        raise typer.Exit(code=1) from None
    result = outcome.result
    dims = _dims_note(result.previous_dim, result.serving_dim, result.dim_changed)
    typer.echo(
        f"cut over: {result.version} is the champion (previous: {result.previous or 'none'}; {dims}; "
        f"clients must re-embed: {'yes' if result.reembed_required else 'no'}); undo with `embedgate "
        f"rollback`"
    )
    if outcome.bento_error:
        typer.echo(
            f"warning: BentoML's model store not updated ({outcome.bento_error}); `embedgate build-bento` "
            f"saves the champion there when it builds",
            err=True,
        )
    _report_webhook(outcome.webhook_error)


def register_base(
    base_model: Annotated[
        str,
        typer.Argument(help="The bundled model name (all-MiniLM-L6-v2) or a sentence-transformers folder."),
    ] = "all-MiniLM-L6-v2",
    registry: Registry = Path("registry"),
    serving_dim: Annotated[
        int | None,
        typer.Option(help="The dim clients stored their vectors at (default: the model's full dim)."),
    ] = None,
    dims: Annotated[
        str | None,
        typer.Option(help="Comma-separated dims to export, e.g. 384,256 (default: the model's own)."),
    ] = None,
    precision: Annotated[str, typer.Option(help="fp32 or int8: the graph served by default.")] = "fp32",
) -> None:
    from gates.base_version import BaseRegistrationRefused
    from gates.base_version import register_base as do_register

    try:
        wanted = [int(d) for d in dims.split(",")] if dims else None
    except ValueError:
        typer.echo(f"refused: --dims {dims!r}: expected comma-separated integers such as 384,256", err=True)
        raise typer.Exit(code=2) from None
    try:
        base = do_register(registry, base_model, serving_dim=serving_dim, dims=wanted, precision=precision)
    except BaseRegistrationRefused as refused:
        typer.echo(f"refused: {refused}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(
        f"registered {base.base_model} as {base.version} (champion; serving dim {base.serving_dim}; dims "
        f"{list(base.dims)}); the next gated run is compared with it and, with `compatibility: auto`, also answers "
        f"in its space"
    )


def retire(
    version: Annotated[str, typer.Argument(help="The version to stop serving, e.g. v0001.")],
    registry: Registry = Path("registry"),
    reason: Reason = "",
) -> None:
    from service.registry.aliases import retire as do_retire
    from service.registry.registry import Registry as Store

    do_retire(Store(registry), version, reason=reason)
    typer.echo(f"retired {version}: requests naming it get 404 from the service's next poll on")


def history(
    registry: Registry = Path("registry"),
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    import json

    from gates.promotion import history as read_history
    from service.registry.registry import Registry as Store

    _report_repairs(registry)
    entries = read_history(registry)
    if as_json:
        for entry in entries:
            typer.echo(json.dumps(entry))
        return
    from service.registry.aliases import read_state

    state = read_state(Store(registry))
    typer.echo(
        f"champion: {state.champion or 'none'}; candidate: {state.candidate or 'none'}; servable: "
        f"{', '.join(state.servable) or 'none'}"
        + (f"; retired: {', '.join(state.retired)}" if state.retired else "")
    )
    typer.echo(
        f"{'time':<21} {'action':<15} {'version':<8} {'from':<8} {'alias':<9} {'re-embed':<8} "
        f"{'who':<12} {'run':<28} reason"
    )
    for e in entries:
        reembed = {True: "yes", False: "no", None: "-"}[e.get("reembed_required")]
        typer.echo(
            f"{e['time']:<21} {e['action']:<15} {e['version'] or '-':<8} {e['from_version'] or '-':<8} "
            f"{e.get('alias') or '-':<9} {reembed:<8} {e['who'][:12]:<12} {(e['run_id'] or '-')[:28]:<28} "
            f"{e['reason']}"
        )


def _report_repairs(registry: Path) -> None:
    """Repair what an interrupted promotion or rollback left (service.registry.registry.Registry.reconcile) and say so;
    warn about history lines that cannot be read (skipped: the champion and the manifests are the truth)."""
    from service.registry.registry import Registry as Store

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


def build_bento(
    registry: Registry = Path("registry"),
    build_ctx: Annotated[
        Path | None,
        typer.Option(
            help="The embedgate project folder (bentofile.yaml, service/); default: this installation's."
        ),
    ] = None,
) -> None:
    from gates.bento import build_bento as do_build

    built = do_build(registry, build_ctx)
    typer.echo(
        f"built {built.bento_tag}: carries {built.version}, the champion of {registry} ({built.model_tag}); "
        f"run it with `bentoml serve {built.bento_tag}` or `bentoml containerize {built.bento_tag}`"
    )
