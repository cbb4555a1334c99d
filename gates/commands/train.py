"""`embedgate train`: data gate, then fine-tuning into a new run directory (or `--resume` an interrupted one)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

HELP = """Fine-tune the base model on a dataset: the data gate runs first (exit 1 if it fails), then
sentence-transformers training with the loss, Matryoshka dims and hyperparameters chosen from the data unless set.

Examples:

```
embedgate train my_config.yaml                # training fields only (base_model, data, loss, ...)
embedgate train --data path/to/scifact --epochs 3 --set mining.strategy=model
embedgate train --data pairs.csv --base-model BAAI/bge-small-en-v1.5     # a Hub id (cached, or fetched when online)
embedgate train --data pairs.csv --set prompts.query="query: " --set prompts.document="passage: "
embedgate train --resume artifacts/runs/20261126-120000-ab12cd34
torchrun --nproc_per_node 2 -m gates.cli train my_config.yaml        # data-parallel, unchanged
```
"""


def register(app: typer.Typer) -> None:
    app.command("train", help=HELP)(train)


def parse_set(values: list[str] | None) -> dict[str, object]:
    """`--set key=value` (YAML values: numbers, booleans, [lists], {maps}; anything else stays text) -> overrides."""
    import yaml

    from training.errors import ConfigError

    out: dict[str, object] = {}
    for item in values or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value (e.g. --set mining.num_negatives=3), got {item!r}")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw)
        # "query: " or "- x" parse as a one-line YAML mapping or list; only {...} / [...] ask for one. So a prompt
        # such as `--set prompts.query="query: "` stays the text the user typed.
        if isinstance(value, dict | list) and not raw.lstrip().startswith(("{", "[")):
            value = raw
        out[key.strip()] = value
    return out


def config_from_options(config: Path | None, data: Path | None, sets: list[str] | None, **flags):
    """YAML file + explicit flags + --set overrides -> TrainConfig (flags win over the file)."""
    from training.config import load_config
    from training.errors import ConfigError

    if config is None and data is None:
        raise ConfigError("give a CONFIG file or --data PATH (e.g. embedgate train --data pairs.csv)")
    overrides = {
        "data.path": str(data) if data else None,
        **{k: v for k, v in flags.items() if v is not None},
    }
    overrides.update(parse_set(sets))
    return load_config(config, overrides)


def train(
    config: Annotated[
        Path | None,
        typer.Argument(
            help="YAML config of training fields: base_model, data, loss, epochs, ... (the fields of training/config.py TrainConfig)."
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Training data: a table file, a BEIR folder, a datasets save_to_disk folder or hf://owner/name."
        ),
    ] = None,
    base_model: Annotated[
        str | None,
        typer.Option(
            help="Base model: a SentenceTransformer folder, a Hugging Face Hub id (through the HF cache; HF_HUB_OFFLINE=1: cache only) or all-MiniLM-L6-v2 (bundled)."
        ),
    ] = None,
    dataset_type: Annotated[
        str | None, typer.Option("--type", help="Dataset type (default: detected).")
    ] = None,
    loss: Annotated[str | None, typer.Option(help="auto, mnrl, cached_mnrl, cosent or triplet.")] = None,
    epochs: Annotated[float | None, typer.Option(help="Epochs (default: from the data size).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default: from the data size).")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    output_dir: Annotated[Path | None, typer.Option(help="Parent folder of run directories.")] = None,
    run_id: Annotated[
        str | None, typer.Option(help="Run directory name (default: time + config hash).")
    ] = None,
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="Any config field: key=value (repeatable).")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue an interrupted run from its last checkpoint.")
    ] = None,
    skip_data_gate: Annotated[
        bool, typer.Option(help="Train without the data gate (not recommended).")
    ] = False,
) -> None:
    import json

    from gates.commands.data_settings import TRAIN, fixes_named_for
    from training.finetune.train import train as run_training
    from training.models import is_main_process

    if resume is not None:
        result = run_training(resume=resume)
    else:
        cfg = config_from_options(
            config,
            data,
            sets,
            **{
                "base_model": base_model,
                "data.type": dataset_type,
                "loss": loss,
                "epochs": epochs,
                "batch_size": batch_size,
                "learning_rate": lr,
                "output_dir": str(output_dir) if output_dir else None,
                "run_id": run_id,
            },
        )
        with fixes_named_for(TRAIN, cfg.data.path):
            result = _gated_training(cfg, skip_data_gate)
    if is_main_process():
        typer.echo(
            json.dumps(
                {
                    k: result.to_dict()[k]
                    for k in (
                        "run_dir",
                        "loss",
                        "train_rows",
                        "steps",
                        "train_seconds",
                        "examples_per_second",
                        "best_metric",
                        "dev_metrics",
                        "rotation",
                    )
                },
                indent=2,
            )
        )
        for tip in result.advice:
            typer.echo(f"advice: {tip['message']}")


def _gated_training(cfg, skip_data_gate: bool):
    """The data gate (unless skipped), then training into a new run directory."""
    from gates.pipeline.stages import data_gate
    from training.finetune.train import train as run_training
    from training.models import is_main_process
    from training.run_dir import new_run_dir

    paths = new_run_dir(cfg)
    if not skip_data_gate:
        gate = data_gate(cfg, paths.data)
        if is_main_process():
            typer.echo(gate.summary)
        if not gate.passed:
            typer.echo(f"data gate failed: training stopped; see {paths.data / 'report.json'}", err=True)
            raise typer.Exit(code=1)
    return run_training(cfg, run_dir=paths.root, check_mined=None if skip_data_gate else _mined_gate(cfg))


def _mined_gate(cfg):
    """The data gate on the mined hard-negatives set, as the pipeline runs it: mining must not create leakage or
    malformed rows (a negative equal to its positive, an eval query in the training rows)."""
    from gates.pipeline.stages import validate_mined
    from training.models import resolve_model_path

    def check(path: Path) -> None:
        gate = validate_mined(path, cfg.data.eval_path, resolve_model_path(cfg.base_model))
        typer.echo(gate.summary)
        if not gate.passed:
            typer.echo(
                f"data gate failed on the mined rows: training stopped; see "
                f"{path.parent / 'data-gate' / 'report.json'}",
                err=True,
            )
            raise typer.Exit(code=1)

    return check
