"""`embedgate mine`: write a hard-negatives dataset mined from pairs / IR / NLI data, then validate it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

HELP = """Mine hard negatives and write them as a hard-negatives dataset (anchor, positive, negative_1..n), which
must then pass the data gate (no negative equals its positive or a labelled positive; no eval-set leakage).

Strategies: random, bm25, model, curriculum (random -> bm25 -> model across the epoch), partial_match,
domain_confusion (with --domain-texts), contradiction (NLI labels -> triplets).

Examples:

```
embedgate mine path/to/scifact --strategy model --num-negatives 3 --out artifacts/mined/scifact
embedgate mine pairs.csv --strategy bm25 --range-min 5 --range-max 50 --relative-margin 0.05 --eval eval.csv
embedgate mine nli.jsonl --strategy contradiction --out artifacts/mined/snli
```
"""


def register(app: typer.Typer) -> None:
    app.command("mine", help=HELP)(mine_command)


def mine_command(
    data: Annotated[Path, typer.Argument(help="Pairs/IR/hard-negatives table or BEIR folder, or NLI data.")],
    out: Annotated[
        Path, typer.Option(help="Output folder (hard_negatives.jsonl, mining.json, data-gate/).")
    ] = Path("artifacts/mined"),
    strategy: Annotated[
        str,
        typer.Option(
            help="random, bm25, model, curriculum, partial_match, domain_confusion or contradiction."
        ),
    ] = "model",
    num_negatives: Annotated[int, typer.Option(help="Negatives per row.")] = 1,
    range_min: Annotated[int, typer.Option(help="Skip this many top candidates.")] = 0,
    range_max: Annotated[int, typer.Option(help="Consider candidates up to this rank.")] = 50,
    relative_margin: Annotated[
        float, typer.Option(help="Drop candidates scoring > (1-m) x positive.")
    ] = 0.05,
    sampling: Annotated[str, typer.Option(help="top or random among the candidates that pass.")] = "top",
    model: Annotated[str, typer.Option(help="Model that scores candidates.")] = "all-MiniLM-L6-v2",
    dataset_type: Annotated[
        str | None, typer.Option("--type", help="Dataset type (default: detected).")
    ] = None,
    columns: Annotated[str | None, typer.Option(help="canonical=source column map.")] = None,
    split: Annotated[str, typer.Option(help="IR qrels split to mine for.")] = "train",
    eval_path: Annotated[
        Path | None, typer.Option("--eval", help="Eval set: the mined set must not leak it.")
    ] = None,
    domain_texts: Annotated[
        Path | None, typer.Option(help="Text file (one per line) from a related domain.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
) -> None:
    import json

    from pydantic import ValidationError

    from gates.commands.data_settings import FLAGS, fixes_named_for
    from gates.pipeline.stages import validate_mined
    from training.config import MiningConfig, format_validation_error
    from training.data.loading import load_dataset
    from training.errors import ConfigError
    from training.finetune.prepare import prepare_training_data
    from training.mining.for_training import mine_training_rows
    from training.models import load_sentence_transformer, resolve_model_path

    if (out / "hard_negatives.jsonl").exists():
        raise ConfigError(
            f"{out / 'hard_negatives.jsonl'} already exists; choose another --out (mined sets are "
            f"not overwritten)"
        )
    with fixes_named_for(FLAGS, data):
        data_set = load_dataset(data, dataset_type, columns)
    prepared = prepare_training_data(data_set, split, dev_fraction=0.0, seed=seed)
    try:
        cfg = MiningConfig(
            strategy=strategy,
            num_negatives=num_negatives,
            range_min=range_min,
            range_max=range_max,
            relative_margin=relative_margin,
            sampling_strategy=sampling,
            domain_confusion_path=domain_texts,
        )
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, "(mine options)")) from None
    # Every retrieval strategy scores candidates with the model (the false-negative margin filter).
    scorer = None if strategy == "contradiction" else load_sentence_transformer(model)
    mined = mine_training_rows(prepared, cfg, scorer, seed=seed)
    path = mined.save(out)
    with fixes_named_for(None):  # the --eval set: no type or column map is given for it
        gate = validate_mined(path, eval_path, tokenizer=resolve_model_path(model))
    typer.echo(json.dumps(mined.summary(), indent=2))
    typer.echo(gate.summary)
    if not gate.passed:
        raise typer.Exit(code=1)
