"""`embedgate evaluate` and `embedgate gate`: metrics on the served artifacts, then the policy decision."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

EVALUATE_HELP = """Evaluate a run's exported ONNX artifacts (every dim, fp32 and int8, through the service's
embedder) and the PyTorch model, against the baseline (the registry's champion, else the base model) on the same
data. Writes eval/candidate.json, eval/baseline.json, eval/summary.md and eval/metrics_vs_dim.png.

Example:

```
embedgate evaluate artifacts/runs/20261126-120000-ab12cd34 --data path/to/scifact --split test   # a BEIR folder, e.g. SciFact
embedgate evaluate artifacts/runs/20261126-120000-ab12cd34 --data sts_eval.csv   # scored pairs: Spearman, Pearson
```
"""

GATE_HELP = """Apply the gate policy to an evaluated run: exit 0 if every critical check passes, 1 if not.
Writes gate/decision.json (one row per check: metric, candidate, baseline, delta, threshold, p-value, CI).

Examples:

```
embedgate gate artifacts/runs/20261126-120000-ab12cd34
embedgate gate artifacts/runs/20261126-120000-ab12cd34 --policy my_policy.yaml
```
"""


def register(app: typer.Typer) -> None:
    app.command("evaluate", help=EVALUATE_HELP)(evaluate)
    app.command("gate", help=GATE_HELP)(gate)


def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="Run directory with onnx/ (and model/).")],
    data: Annotated[
        Path,
        typer.Option(
            help="BEIR folder with qrels for the split, or an STS table (sentence1, sentence2, score)."
        ),
    ],
    split: Annotated[str, typer.Option(help="qrels split to evaluate on.")] = "test",
    registry: Annotated[Path | None, typer.Option(help="Registry whose champion is the baseline.")] = Path(
        "registry"
    ),
    backends: Annotated[
        str, typer.Option(help="Comma list of onnx-fp32, onnx-int8, torch.")
    ] = "onnx-fp32,onnx-int8,torch",
    general_sts: Annotated[Path | None, typer.Option(help="Optional general-domain STS table.")] = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Embedding cache folder (default: `cache` beside the runs folder).")
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Encode everything, keep nothing.")] = False,
    device: Annotated[
        str | None, typer.Option(help="auto, cpu, cuda or cuda:N (default: $EMBEDGATE_DEVICE, else auto).")
    ] = None,
) -> None:
    from gates.commands.data_settings import fixes_named_for
    from gates.evaluation.evaluate import load_sts_set, run_evaluation
    from training.device import resolve_device
    from training.run_dir import open_run_dir

    run = open_run_dir(run_dir)
    resolved = resolve_device(device)
    if resolved.note:
        typer.echo(resolved.note, err=True)
    cache = None if no_cache else (cache_dir or run.root.resolve().parent.parent / "cache")
    # evaluate takes no dataset type or column map: its tables must use the canonical names
    with fixes_named_for(None):
        sts = load_sts_set(general_sts) if general_sts else None
        outcome = run_evaluation(
            run,
            data,
            split,
            registry_root=registry,
            backends=tuple(b.strip() for b in backends.split(",") if b.strip()),
            sts=sts,
            cache_dir=cache,
            device=resolved.name,
            onnx_device="auto" if resolved.requested == "auto" else resolved.name,
        )
    typer.echo((run.eval / "summary.md").read_text())
    typer.echo(f"wrote {', '.join(outcome.files.values())}")


def gate(
    run_dir: Annotated[Path, typer.Argument(help="An evaluated run directory.")],
    policy: Annotated[
        Path | None,
        typer.Option(help="Gate policy YAML (default: the packaged policy; Spearman for an STS eval set)."),
    ] = None,
) -> None:
    from gates.quality_gate.stage import run_gate
    from training.run_dir import open_run_dir

    decision = run_gate(open_run_dir(run_dir), policy)
    typer.echo(decision.table())
    if not decision.passed:
        raise typer.Exit(code=1)
