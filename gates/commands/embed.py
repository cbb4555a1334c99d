"""`embedgate embed`: re-embed a corpus with one registry version, locally or on Ray (gates/reembed.py)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Annotated

import typer

EMBED_HELP = """Embed a corpus (JSONL, CSV, Parquet, or a BEIR folder) with one registry version, through the
exact ONNX graph the service serves, into resumable Parquet shards (id, vector, version, dim) plus a manifest.
Run it again after a crash, Ctrl-C or a kill: every shard finished before it is kept and skipped. With
--ray-address (or RAY_ADDRESS) it runs on Ray Data, one model copy per actor: `auto` or `ray://host:10001` joins a
running cluster (`ray start --head` starts one); `local` starts a private Ray instance for this command and stops
it when the command ends or is stopped. `--version v0003@v0001` (or `champion@v0001`) embeds in v0001's space
with the newer model (documents added beside vectors stored with v0001; docs/versions.md).

Examples:

```
embedgate embed corpus.jsonl --version v0003 --out embeddings/v0003
embedgate embed corpus.csv --version candidate --dim 128 --id-column doc_id --out embeddings/v0003-128
embedgate embed corpus.parquet --version v0003 --out embeddings/v0003 --ray-address local --workers 2
embedgate embed corpus.parquet --version v0003 --out embeddings/v0003 --ray-address auto --workers 8
embedgate embed corpus.jsonl --version candidate --out embeddings/v0003 --cutover
embedgate embed new-documents.jsonl --version champion@v0001 --out embeddings/v0001-added
```
"""


def read_champion(registry: Path) -> str | None:
    from service.registry.registry import Registry

    champion = Registry(registry).champion()
    return champion.version if champion else None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def register(app: typer.Typer) -> None:
    app.command("embed", help=EMBED_HELP)(embed)


def embed(
    corpus: Annotated[Path, typer.Argument(help="A .jsonl/.csv/.parquet table or a BEIR folder.")],
    version: Annotated[
        str,
        typer.Option(
            help="Registry version (v0003) or alias (champion, candidate); v0003@v0001 or champion@v0001: in "
            "v0001's space."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Output folder (created; resumed when it holds the same run).")],
    registry: Annotated[
        str, typer.Option(help="Registry folder, or s3://bucket/prefix.", envvar="EMBEDGATE_REGISTRY")
    ] = Path("registry"),
    dim: Annotated[int | None, typer.Option(help="Output dims (default: the version's serving dim).")] = None,
    id_column: Annotated[str | None, typer.Option(help="Id column (default: id or _id).")] = None,
    text_column: Annotated[str, typer.Option(help="Text column.")] = "text",
    shard_size: Annotated[
        int | None,
        typer.Option(
            help="Rows per Parquet shard, the unit of resume (default: about 32 shards, 64 to 4096 rows each)."
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            help="onnxruntime threads: of the one model locally (default: all cores), or of each Ray actor, "
            "which reserves as many CPUs (default: 1)."
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="Run on Ray: 'auto' or ray://host:10001 (a running cluster), or 'local' (a private instance "
            "for this command).",
            envvar="RAY_ADDRESS",
        ),
    ] = None,
    workers: Annotated[int, typer.Option(help="Ray actors, one model copy each.")] = 2,
    cutover: Annotated[
        bool,
        typer.Option(
            help="When every shard is done, cut the champion over to this version "
            "(as `embedgate cutover`, same dim guard)."
        ),
    ] = False,
    allow_dim_change: Annotated[bool, typer.Option(help="With --cutover: allow a new default dim.")] = False,
) -> None:
    from tqdm import tqdm

    from gates.reembed import embed_corpus, read_corpus

    if cutover and "@" in version:
        typer.echo(
            f"--cutover with --version {version}: a compatible space is not a version the champion can move to; "
            f"embed with a version (v0003) or an alias to cut over",
            err=True,
        )
        raise typer.Exit(code=2)
    texts = read_corpus(corpus, id_column, text_column)  # every input problem is reported before work starts
    bar = tqdm(
        total=len(texts.ids), unit="text", unit_scale=True, desc=f"embed {version}", dynamic_ncols=True
    )

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    # `kill` (SIGTERM) stops the command as Ctrl-C does, through the `finally`s that shut Ray down: Python's default
    # would end the process at once and leave a private Ray instance's processes running.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = embed_corpus(
            texts,
            registry,
            version,
            out,
            dim=dim,
            shard_size=shard_size,
            threads=threads,
            ray_address=ray_address,
            workers=workers,
            progress=progress,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
        bar.close()
    if result.skipped_shards == result.shards:
        typer.echo(
            f"nothing left to embed: all {result.shards} shard(s) of {result.rows} texts in {result.out} are "
            f"done (version {result.version}, dim {result.dim}); manifest: {result.out / 'manifest.json'}"
        )
    else:
        skipped = f"; {result.skipped_shards} shard(s) already done, skipped" if result.skipped_shards else ""
        typer.echo(
            f"embedded {result.rows} texts with {result.version} at dim {result.dim} ({result.engine}, "
            f"{result.texts_per_s:.0f} texts/s) into {result.shards} shard(s) in {result.out}{skipped}; "
            f"manifest: {result.out / 'manifest.json'}"
        )
    if cutover:
        from gates.commands.registry import cutover as cutover_command

        champion = read_champion(registry)
        if champion == result.version:
            typer.echo(f"{result.version} is already the champion: nothing to cut over")
            return
        cutover_command(
            result.version,
            registry,
            allow_dim_change=allow_dim_change,
            reason=f"re-embedding done: {result.rows} texts in {result.out}",
            webhook=os.environ.get("EMBEDGATE_WEBHOOK_URL") or None,
        )
