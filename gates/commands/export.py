"""`embedgate export`: a run's SentenceTransformer -> one ONNX graph per Matryoshka dim (fp32 + int8, fp16 opt-in)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

HELP = """Export RUN_DIR/model to RUN_DIR/onnx: one self-contained ONNX graph per dim (input_ids, attention_mask ->
unit-length sentence_embedding), each with an int8 twin, every graph checked against the PyTorch model on a fixed
probe set (fp32 must reach cosine 0.9999). Exit 0 on success, 2 on a bad input or a failed parity check; a failed
export writes nothing.

--fp16 adds a float16 twin per dim for onnxruntime's CUDA provider (serve it with EMBEDGATE_PRECISION=fp16
EMBEDGATE_DEVICE=cuda). It is kept only if every dim's fp16 graph reaches cosine 0.999 to its fp32 graph; otherwise
none is written, the export still succeeds, and export.json's `fp16` says why.

Examples:

```
embedgate export artifacts/runs/r1
embedgate export artifacts/runs/r1 --dims 384,128 --no-int8
embedgate export artifacts/runs/r1 --fp16 --overwrite
embedgate export --model path/to/st-model --out path/to/onnx
```
"""


def register(app: typer.Typer) -> None:
    app.command("export", help=HELP)(export)


def export(
    run_dir: Annotated[
        Path | None,
        typer.Argument(
            help="A run folder holding model/ (a SentenceTransformer save); the export goes to RUN_DIR/onnx."
        ),
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="The SentenceTransformer folder (default: RUN_DIR/model).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Where to write the export (default: RUN_DIR/onnx).")
    ] = None,
    dims: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated dims, e.g. 384,256,128,64 (default: the model dim and its halvings down to 64)."
        ),
    ] = None,
    int8: Annotated[
        bool, typer.Option("--int8/--no-int8", help="Also write a dynamically quantised int8 graph.")
    ] = True,
    fp16: Annotated[
        bool,
        typer.Option(
            "--fp16/--no-fp16",
            help="Also write a float16 graph per dim (for CUDA serving), kept only where it keeps parity.",
        ),
    ] = False,
    opset: Annotated[int, typer.Option(help="ONNX opset (14-20).")] = 17,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing export instead of refusing.")
    ] = False,
) -> None:
    from training.export.export_run import export_run

    model_dir, out_dir = _resolve_paths(run_dir, model, out)
    result = export_run(
        model_dir, out_dir, dims=_parse_dims(dims), int8=int8, opset=opset, overwrite=overwrite, fp16=fp16
    )
    typer.echo(f"exported {model_dir} -> {out_dir} in {result.seconds:.1f} s (dims {list(result.dims)})")
    typer.echo(f"{'graph':<24} {'MB':>7} {'min cos':>9} {'mean cos':>9} {'max |diff|':>11}")
    for graph in result.graphs:
        parity = graph.parity
        typer.echo(
            f"{graph.path:<24} {graph.size_bytes / 1e6:7.1f} {parity.min_cosine:9.6f} "
            f"{parity.mean_cosine:9.6f} {parity.max_abs_diff:11.2e}"
        )
    if result.fp16 is not None and result.fp16["status"] == "refused":
        typer.echo(f"fp16: refused: {result.fp16['reason']}")
    elif result.fp16 is not None:
        typer.echo("(fp16 rows: cosine to the fp32 graph; the others: to the PyTorch model)")


def _resolve_paths(run_dir: Path | None, model: Path | None, out: Path | None) -> tuple[Path, Path]:
    from gates.errors import RunDirectoryError

    if run_dir is None:
        if model is None or out is None:
            raise RunDirectoryError(
                "expected RUN_DIR, or both --model PATH and --out PATH; got "
                f"--model {model} --out {out} (e.g. `embedgate export artifacts/runs/r1`)"
            )
        return model, out
    if model is None and not (run_dir / "model").is_dir():
        raise RunDirectoryError(
            f"{run_dir}: no model/ folder in this run directory; train first, or pass --model PATH"
        )
    return model or run_dir / "model", out or run_dir / "onnx"


def _parse_dims(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise typer.BadParameter(
            f"expected comma-separated integers like 384,256,128,64, got {text!r}", param_hint="--dims"
        ) from None
