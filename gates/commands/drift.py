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
embedgate drift --list --novel                   # each window's novel queries too
embedgate drift --export to_label.csv --corpus data/corpus.jsonl   # drifted windows' novel queries + top passages
embedgate drift --add-labels to_label.csv --into data --out data-v2   # labelled rows into the next training data
```

Each judged window lists its novel queries (rows further from every reference query than the novelty cutoff,
near-duplicates grouped, the nearest reference query beside each); a drifted window's are printed. --export
writes them (ids, anchor, count, windows) with the champion's top passages from --corpus, for a person to fill
`positive`; `embedgate validate` reads the labelled file as a pairs set. --add-labels puts the labelled rows into
a copy of the domain's BEIR folder (half of them evaluated beside the old test queries) for `embedgate pipeline`.
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
    novel: Annotated[
        bool,
        typer.Option("--novel", help="Print every shown window's novel queries, not only drifted ones'."),
    ] = False,
    export: Annotated[
        Path | None,
        typer.Option(
            help="Write the novel queries of the drifted windows of the served version (or of --window) to this "
            ".csv/.jsonl for labelling; needs --corpus. Judges nothing."
        ),
    ] = None,
    corpus: Annotated[
        Path | None,
        typer.Option(help="With --export: the passages to rank (a BEIR folder or an id/text .jsonl/.csv)."),
    ] = None,
    top_k: Annotated[int, typer.Option(min=1, help="With --export: passages listed per query.")] = 5,
    add_labels: Annotated[
        Path | None,
        typer.Option(
            help="A labelled export (`positive` filled): add its rows to a copy of --into as --out. Judges nothing."
        ),
    ] = None,
    into: Annotated[
        Path | None, typer.Option(help="With --add-labels: the domain's BEIR folder (the old training data).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="With --add-labels: the new BEIR folder to write.")] = None,
    eval_share: Annotated[
        float,
        typer.Option(help="With --add-labels: share of labelled queries kept for evaluation (test split)."),
    ] = 0.5,
) -> None:
    from service.drift.errors import DriftInputError
    from service.drift.runner import DriftRunResult, alert_states, run_drift, served_version
    from service.drift.settings import DriftSettings
    from service.drift.windows import list_windows

    if window and all_windows:
        raise DriftInputError(f"--window {window} and --all both choose windows; pass one of them")
    if add_labels is not None:
        _add_labels(add_labels, into, out, eval_share, as_json)
        return
    settings = DriftSettings.from_env()
    overrides = {"dir": drift_dir} if drift_dir else {}
    if alert_windows:
        overrides["alert_windows"] = alert_windows
    settings = DriftSettings.model_validate({**settings.model_dump(), **overrides})  # a URL stays a URL
    if export is not None:
        _export(settings, registry, export, corpus, window, top_k, as_json)
        return
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
        _print(result, settings, novel)
    if result.alerting:
        raise typer.Exit(1)


def _export(settings, registry, export: Path, corpus: Path | None, window, top_k: int, as_json: bool) -> None:
    from gates.drift_labels import DriftLabelsError, export_novel

    if corpus is None:
        raise DriftLabelsError(
            f"--export {export} needs --corpus: the passages the champion ranks for each novel query (a BEIR "
            f"folder or an id/text table)"
        )
    if settings.on_object_store:
        from service.drift.object_mirror import pull_for_reading

        pull_for_reading(settings, ("summaries/",))
    done = export_novel(settings, Path(str(registry)), corpus, export, window_ids=window or None, top_k=top_k)
    if as_json:
        typer.echo(json.dumps(done.to_dict(), indent=2))
        return
    typer.echo(
        f"wrote {done.rows} novel queries of {len(done.windows)} window(s) to {done.out}, each with the top "
        f"{done.top_k} passages of {corpus} by {done.version} at dim {done.dim}.\nNext: fill `positive` (copy the "
        f"right rank_N passage; leave it empty to skip a row), check it with `embedgate validate {done.out}`, then "
        f"`embedgate drift --add-labels {done.out} --into <BEIR folder> --out <new folder>`."
    )


def _add_labels(
    labelled: Path, into: Path | None, out: Path | None, eval_share: float, as_json: bool
) -> None:
    from gates.drift_labels import DriftLabelsError, add_labels

    if into is None or out is None:
        raise DriftLabelsError(
            f"--add-labels {labelled} needs --into (the domain's BEIR folder, the old training data) and --out "
            f"(the new folder to write); got --into {into}, --out {out}"
        )
    done = add_labels(labelled, into, out, eval_share=eval_share)
    if as_json:
        typer.echo(json.dumps(done.to_dict(), indent=2))
        return
    typer.echo(
        f"wrote {done.out}: {done.labelled} labelled queries added ({done.train} to train, {done.test} to test and "
        f"to the `novel` split), {done.new_documents} new document(s); {done.unlabelled} row(s) without a positive "
        f"left out.\nNext: `embedgate pipeline` with data.path {done.out}: the gate compares the candidate with "
        f"the champion on the old test queries and the new ones together; "
        f"`embedgate evaluate RUN --data {done.out} --split novel` scores the new ones alone."
    )


def _print(result, settings, all_novel: bool = False) -> None:
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
        if window.novel and (window.drifted or all_novel):
            _print_novel(window.novel)
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


def _print_novel(novel: dict, limit: int = 5) -> None:
    """A window's novel-query groups under its line: size, examples, the nearest reference query."""
    from service.drift.novelty import NovelQueries, headline

    found = NovelQueries.from_dict(novel)
    typer.echo(f"    novel queries: {headline(found)}")
    for group in found.groups[:limit]:
        examples = " | ".join(f"{text[:70]!r}" for text in group.examples) or f"(texts {found.texts})"
        typer.echo(f"      {group.rows:>4}x {examples}")
        if group.nearest_reference_query is not None:
            typer.echo(
                f"            nearest reference query ({group.nearest_reference_cosine:.2f}): "
                f"{group.nearest_reference_query[:70]!r}"
            )
    if len(found.groups) > limit:
        typer.echo(
            f"      ... {found.novel_groups - limit} more group(s): embedgate drift --export FILE --corpus ..."
        )
