"""Re-embed a corpus with one registry version, exactly as the service embeds it, into resumable Parquet shards.

    embedgate embed corpus.jsonl --version v0003 --out embeddings/v0003            # local, all cores
    embedgate embed BEIR_DIR --version v0003 --dim 128 --out embeddings/v0003-128 --ray-address auto

Input: JSONL, CSV or Parquet with an id and a text column (`--id-column`, `--text-column`), or a BEIR folder
(its corpus.jsonl, title and text joined as the evaluation joins them). Every problem (a missing column, an empty
text, a duplicate id, a version or dim that is not served) is reported before any work starts.

The model is the service's own: `load_version` verifies the version's manifest (sha256) and loads its ONNX graph
through `OnnxEmbedder`, and vectors are cut to `dim` and re-normalised by the same code, so a vector here equals
what `/v1/embeddings` returns for that version and dim.

Output (DIR):
    plan.json                      what is being embedded (version, dim, corpus sha256, shard size): a resume must
                                   match it, so shards of two different runs never mix
    shards/part-00000.parquet      columns id (string), vector (list<float32>), version, dim; written to a temp
                                   name and renamed, so a shard exists whole or not at all
    manifest.json                  written last: rows, shards with their sha256, the model's graph sha256

Resume: run the same command again; finished shards are skipped, so a crash or Ctrl-C costs at most the shards in
flight and no row is written twice. Engines: `local` (one model, onnxruntime using the given threads) or `ray`
(Ray Data `map_batches` over an actor pool, one model copy per actor, on an existing cluster): the distributed
engine a user grows into, rather than a home-made one. Results stream back in order and the driver writes the
shards, so both engines share the writer and the resume logic.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gates.errors import EmbedgateGateError
from training.run_dir import write_json_atomic

PLAN = "plan.json"
MANIFEST = "manifest.json"
SHARDS = "shards"
FORMAT_VERSION = 1
MIN_SHARDS, MIN_SHARD_ROWS, MAX_SHARD_ROWS = 32, 64, 4096
LOCAL_RAY = "local"  # --ray-address local: a private Ray instance for this command, stopped with it


class ReembedError(EmbedgateGateError):
    """Bad input for `embedgate embed` (refused before any work starts) or an output folder that does not match."""


@dataclass(frozen=True)
class Corpus:
    ids: list[str]
    texts: list[str]
    sha256: str  # of the ids and texts, in order: a resume must embed the same corpus


@dataclass(frozen=True)
class EmbedResult:
    out: Path
    version: str
    dim: int
    rows: int
    shards: int
    skipped_shards: int  # finished by an earlier run
    seconds: float
    engine: str
    skipped_rows: int = 0

    @property
    def texts_per_s(self) -> float:
        """Texts embedded by this run per second (rows of skipped shards not counted)."""
        embedded = self.rows - self.skipped_rows
        return embedded / self.seconds if self.seconds > 0 else 0.0


def read_corpus(path: Path, id_column: str | None = None, text_column: str = "text") -> Corpus:
    """Ids and texts from a JSONL/CSV/Parquet table or a BEIR folder, checked: ReembedError on any problem."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise ReembedError(
            f"corpus {path}: not found; expected a .jsonl, .csv or .parquet file or a BEIR folder "
            f"(with corpus.jsonl)"
        )
    if path.is_dir():
        if not (path / "corpus.jsonl").is_file():
            raise ReembedError(
                f"corpus {path}: a folder without corpus.jsonl; expected a BEIR folder or a file"
            )
        from training.data.beir import IRDataset, _read_jsonl_frame

        frame = _read_jsonl_frame(path / "corpus.jsonl", optional=("title",))
        texts = IRDataset(path, frame, None).doc_texts()  # title and text joined as the evaluation joins them
        if len(texts) != len(frame):
            raise ReembedError(
                f"{path / 'corpus.jsonl'}: {len(frame) - len(texts)} duplicate _id values; each "
                f"document needs a unique id"
            )
        return _checked(path, list(texts), list(texts.values()))
    readers = {
        ".jsonl": lambda p: pd.read_json(p, lines=True, dtype=False),
        ".csv": lambda p: pd.read_csv(p, dtype=str, keep_default_na=False),
        ".parquet": pd.read_parquet,
    }
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise ReembedError(
            f"corpus {path}: unknown format {path.suffix!r}; expected {sorted(readers)} or a BEIR folder"
        )
    try:
        frame = reader(path)
    except Exception as err:  # pandas/pyarrow raise many types for a malformed file
        raise ReembedError(
            f"corpus {path}: not a readable {path.suffix} table ({type(err).__name__}: {err})"
        ) from None
    id_column = id_column or next((c for c in ("id", "_id") if c in frame.columns), "id")
    missing = [c for c in (id_column, text_column) if c not in frame.columns]
    if missing:
        raise ReembedError(
            f"corpus {path}: no column {missing}; columns are {list(frame.columns)[:20]}. Name them "
            f"with --id-column / --text-column"
        )
    ids = [str(v) for v in frame[id_column].tolist()]
    texts = [v if isinstance(v, str) else ("" if v is None or v != v else str(v)) for v in frame[text_column]]
    return _checked(path, ids, texts)


def _checked(path: Path, ids: list[str], texts: list[str]) -> Corpus:
    if not ids:
        raise ReembedError(f"corpus {path}: no rows; nothing to embed")
    empty = [i for i, t in zip(ids, texts, strict=True) if not t.strip()]
    if empty:
        raise ReembedError(
            f"corpus {path}: {len(empty)} empty text(s), e.g. ids {empty[:5]}; an empty text has no "
            f"meaningful embedding: drop or fill those rows"
        )
    if len(set(ids)) != len(ids):
        seen, dups = set(), []
        for i in ids:
            if i in seen:
                dups.append(i)
            seen.add(i)
        raise ReembedError(f"corpus {path}: duplicate ids, e.g. {dups[:5]}; each row needs a unique id")
    digest = hashlib.sha256()
    for i, t in zip(ids, texts, strict=True):
        digest.update(i.encode() + b"\0" + t.encode("utf-8", "surrogatepass") + b"\0")
    return Corpus(ids, texts, digest.hexdigest())


def resolve_version(registry_root: Path, version: str, dim: int | None) -> tuple[Path, int, str]:
    """(version folder, dim, precision): the version must be servable and `dim` one it was exported for."""
    target = resolve_target(registry_root, version, dim)
    if target.space is not None:
        raise ReembedError(f"{version!r}: expected a version or alias here, not a compatible space")
    return target.folder, target.dim, target.precision


@dataclass(frozen=True)
class EmbedTarget:
    folder: Path  # the version's folder in the registry
    dim: int
    precision: str
    name: str  # what the shards and the manifest record: "v0002", or "v0002@v0001"
    space: str | None = (
        None  # the older version whose space the vectors are in (service/versions/compat_spaces.py)
    )


def resolve_target(registry_root: Path, version: str, dim: int | None) -> EmbedTarget:
    """A servable version or alias, or `<version or alias>@<old version>`: the newer model in the old version's
    space (documents a client adds beside the vectors it stored with the old version; docs/versions.md)."""
    from service.registry.aliases import read_state
    from service.registry.registry import Registry
    from service.versions.compat_spaces import newest_in_space, spaces_in_manifest, split_space

    try:
        base, space = split_space(version)
    except ValueError as err:
        raise ReembedError(str(err)) from None
    registry = Registry(registry_root)
    state = read_state(registry)
    aliases = state.aliases()
    servable_hint = f"servable: {list(state.servable) or 'none'} (aliases: {aliases or 'none'})"
    if space is not None and base in aliases:  # champion@v0001: the newest version up to it in that space
        found = newest_in_space(
            state.servable, aliases[base], space, lambda v: spaces_in_manifest(registry.manifest(v))
        )
        if found is None:
            raise ReembedError(
                f"no servable version up to {base} ({aliases[base]}) answers in {space}'s space; {servable_hint}"
            )
        base = found
    base = aliases.get(base, base)
    if base not in state.servable:
        why = "is retired" if base in state.retired else "does not exist"
        raise ReembedError(f"version {base!r} {why} in the registry {registry_root}; {servable_hint}")
    if space == base:
        space = None  # a version's own space is the version itself
    folder = registry.version_dir(base)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    export_dir, default_dim, name = folder / "onnx", manifest.get("serving_dim"), base
    if space is not None:
        entry = (manifest.get("compatible_spaces") or {}).get(space)
        if entry is None:
            raise ReembedError(
                f"{base} answers in no {space} space; its compatible spaces: "
                f"{list(spaces_in_manifest(manifest)) or 'none'} (embedgate history says which each promotion got)"
            )
        export_dir, default_dim, name = (
            folder / "compat" / space / "onnx",
            entry.get("serving_dim"),
            f"{base}@{space}",
        )
    export = json.loads((export_dir / "embedder.json").read_text(encoding="utf-8"))
    dim = dim or default_dim or export["full_dim"]
    if dim not in export["dims"]:
        raise ReembedError(
            f"--dim {dim}: {name} was exported for dims {export['dims']}; pick one of them (or "
            f"omit --dim for its serving dim {default_dim})"
        )
    return EmbedTarget(folder, dim, manifest.get("serve_precision") or "fp32", name, space)


def embed_corpus(
    corpus: Corpus,
    registry_root: Path,
    version: str,
    out: Path,
    *,
    dim: int | None = None,
    shard_size: int | None = None,
    threads: int | None = None,
    ray_address: str | None = None,
    workers: int = 2,
    batch_size: int = 64,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> EmbedResult:
    """Embed `corpus` into `out` (resuming what an earlier identical run finished). `progress(done, total)` is
    called with row counts after each shard. `shard_size` None: `auto_shard_size`. `threads` None: every core
    locally, one per Ray actor (each actor reserves as many CPUs as it runs threads)."""
    shard_size = shard_size or auto_shard_size(len(corpus.ids))
    if shard_size < 1 or batch_size < 1 or workers < 1:
        raise ReembedError(
            f"shard size, batch size and workers must be >= 1 (got {shard_size}, {batch_size}, {workers})"
        )
    target = resolve_target(registry_root, version, dim)
    folder, dim, precision, version = target.folder, target.dim, target.precision, target.name
    plan = {
        "format_version": FORMAT_VERSION,
        "version": version,
        "dim": dim,
        "precision": precision,
        "corpus_sha256": corpus.sha256,
        "rows": len(corpus.ids),
        "shard_size": shard_size,
    }
    shards_dir = _prepare(out, plan)
    starts = list(range(0, len(corpus.ids), shard_size))
    todo = [n for n, _ in enumerate(starts) if not (shards_dir / _shard_name(n)).is_file()]
    done_rows = sum(min(shard_size, len(corpus.ids) - starts[n]) for n in range(len(starts)) if n not in todo)
    progress(done_rows, len(corpus.ids))
    started = time.perf_counter()
    engine = "ray" if ray_address else "local"
    if todo:
        batches = (_ray_batches if ray_address else _local_batches)(
            corpus,
            starts,
            todo,
            shard_size,
            folder,
            dim,
            precision,
            threads,
            batch_size,
            ray_address=ray_address,
            workers=workers,
            space=target.space,
        )
        with contextlib.closing(batches):  # stopped early (Ctrl-C, an error): Ray is shut down at once
            for n, vectors in batches:
                rows = slice(starts[n], starts[n] + len(vectors))
                _write_shard(shards_dir / _shard_name(n), corpus.ids[rows], vectors, version, dim)
                done_rows += len(vectors)
                progress(done_rows, len(corpus.ids))
    seconds = time.perf_counter() - started
    _write_manifest(out, plan, folder, len(starts))
    embedded = sum(min(shard_size, len(corpus.ids) - starts[n]) for n in todo)
    return EmbedResult(
        out,
        version,
        dim,
        len(corpus.ids),
        len(starts),
        len(starts) - len(todo),
        seconds,
        engine,
        len(corpus.ids) - embedded,
    )


def auto_shard_size(rows: int) -> int:
    """Rows per shard when none is given: about MIN_SHARDS shards, so that Ray's actors all get work and a killed
    run keeps most of what it did, but no fewer than MIN_SHARD_ROWS rows (a shard is a task and a file) and no
    more than MAX_SHARD_ROWS (bounded memory per shard). Depends on the row count only, so a resume gets the same."""
    return max(MIN_SHARD_ROWS, min(MAX_SHARD_ROWS, -(-rows // MIN_SHARDS)))


def _shard_name(n: int) -> str:
    return f"part-{n:05d}.parquet"


def _prepare(out: Path, plan: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    plan_path = out / PLAN
    if plan_path.is_file():
        earlier = json.loads(plan_path.read_text(encoding="utf-8"))
        if earlier != plan:
            changed = {k: (earlier.get(k), v) for k, v in plan.items() if earlier.get(k) != v}
            raise ReembedError(
                f"{out} holds an earlier run with other settings {changed} (earlier, now); resume "
                f"with the same corpus, version, dim and shard size, or use a new --out folder"
            )
    elif any(out.iterdir()):
        raise ReembedError(
            f"{out} is not empty and has no {PLAN}: not an embedgate embed folder; use a new --out"
        )
    else:
        write_json_atomic(plan_path, plan)
    shards = out / SHARDS
    shards.mkdir(exist_ok=True)
    for leftover in shards.glob(".tmp-*"):  # a shard being written when an earlier run was killed
        leftover.unlink()
    return shards


def _write_shard(path: Path, ids: list[str], vectors: Any, version: str, dim: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim)
    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "vector": column,
            "version": pa.array([version] * len(ids), pa.string()),
            "dim": pa.array([dim] * len(ids), pa.int32()),
        }
    )
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)  # whole or absent: a resumed run skips exactly the shards that exist
    except (
        BaseException
    ):  # a stop (SIGTERM, Ctrl-C) mid-write too: no half-written shard left beside the others
        tmp.unlink(missing_ok=True)
        raise


def _write_manifest(out: Path, plan: dict[str, Any], folder: Path, shard_count: int) -> None:
    import pyarrow.parquet as pq

    from service.storage.atomic_files import sha256_of

    shards = []
    for n in range(shard_count):
        path = out / SHARDS / _shard_name(n)
        shards.append(
            {
                "file": f"{SHARDS}/{path.name}",
                "rows": pq.ParquetFile(path).metadata.num_rows,
                "sha256": sha256_of(path),
            }
        )
    model_manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    write_json_atomic(
        out / MANIFEST,
        {
            **plan,
            "shards": shards,
            "total_rows": sum(s["rows"] for s in shards),
            "model_manifest_sha256": sha256_of(folder / "manifest.json"),
            "run_id": model_manifest.get("run_id"),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )


def _load(folder: Path, precision: str, threads: int | None, space: str | None = None):
    if space is not None:
        from service.versions.compat_spaces import load_compatible

        return load_compatible(folder, space, precision=precision, threads=threads)  # verified, warmed up
    from service.model.serving_model import load_version

    return load_version(folder, precision=precision, threads=threads)  # manifest sha256 verified, warmed up


def _local_batches(
    corpus: Corpus,
    starts: list[int],
    todo: list[int],
    shard_size: int,
    folder: Path,
    dim: int,
    precision: str,
    threads: int | None,
    batch_size: int,
    space: str | None = None,
    **_: Any,
) -> Iterator[tuple[int, Any]]:
    model = _load(folder, precision, threads, space)
    for n in todo:
        texts = corpus.texts[starts[n] : starts[n] + shard_size]
        yield n, model.embedder.embed(texts, dimensions=dim, batch_size=batch_size)


class EmbedActor:
    """One Ray Data actor: one copy of the served model, embedding batches of {"shard", "row", "text"}."""

    def __init__(
        self, folder: str, precision: str, dim: int, threads: int, batch_size: int, space: str | None = None
    ) -> None:
        self.model = _load(Path(folder), precision, threads, space)
        self.dim = dim
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        vectors = self.model.embedder.embed(
            list(batch["text"]), dimensions=self.dim, batch_size=self.batch_size
        )
        return {"shard": batch["shard"], "row": batch["row"], "vector": vectors}


def connect_ray(address: str) -> bool:
    """Connect to the Ray cluster at `address` ("local": start a private one). -> whether this call started Ray
    (then the caller shuts it down). ReembedError, with the fix, when no cluster answers."""
    import ray

    if ray.is_initialized():
        return False
    on_sigterm = signal.getsignal(signal.SIGTERM) if _main_thread() else None
    try:
        ray.init(
            address=address,
            log_to_driver=False,
            include_dashboard=False,  # nothing of ours reads it, and it is the first thing to fail on a small box
            logging_level=logging.WARNING,
        )
    except ConnectionError as err:
        raise ReembedError(
            f"--ray-address {address}: no Ray cluster answered ({str(err).splitlines()[0]}). Start one "
            f"(`ray start --head`, then --ray-address auto), or pass --ray-address {LOCAL_RAY} to run on a "
            f"private Ray instance started and stopped with this command"
        ) from None
    if on_sigterm is not None:
        # ray.init replaces the process's SIGTERM handling with its own, which logs a stack and ends the process
        # without running its `finally`s (where Ray is shut down): keep what the caller had.
        signal.signal(signal.SIGTERM, on_sigterm)
    return True


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _ray_batches(
    corpus: Corpus,
    starts: list[int],
    todo: list[int],
    shard_size: int,
    folder: Path,
    dim: int,
    precision: str,
    threads: int | None,
    batch_size: int,
    *,
    ray_address: str,
    workers: int,
    space: str | None = None,
) -> Iterator[tuple[int, Any]]:
    """Each shard is one block of a Ray Data pipeline; a shard is yielded (and written) as soon as its rows are
    all back, in whatever order the actors finish, so a killed run keeps every shard finished before the kill."""
    import numpy as np
    import ray

    started = connect_ray(ray_address)
    try:
        context = ray.data.DataContext.get_current()
        # Out of order: an ordered stream holds every finished shard behind the slowest earlier one.
        context.execution_options.preserve_order = False
        context.enable_progress_bars = False  # ours counts texts; Ray's would interleave with it
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # its "bars disabled" notice
        context.print_on_execution_start = False
        rows = [
            {"shard": n, "row": i, "text": corpus.texts[i]}
            for n in todo
            for i in range(starts[n], min(starts[n] + shard_size, len(corpus.texts)))
        ]
        dataset = ray.data.from_items(rows, override_num_blocks=len(todo))
        per_actor = threads or 1
        embedded = dataset.map_batches(
            EmbedActor,
            batch_size=shard_size,  # a whole shard per call: the block of one shard comes back as one piece
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=per_actor,  # Ray reserves the CPUs each actor's onnxruntime threads use
            # No actor restarts: Ray logs an error-level line on every run for a restartable actor whose constructor
            # arguments sit in its object store (ray-project/ray#53727); a failed run resumes from its shards instead.
            max_restarts=0,
            fn_constructor_kwargs={
                "folder": str(folder),
                "precision": precision,
                "dim": dim,
                "threads": per_actor,
                "batch_size": batch_size,
                "space": space,
            },
        )
        pending: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        expected = {n: min(shard_size, len(corpus.texts) - starts[n]) for n in todo}
        for batch in embedded.iter_batches(batch_format="numpy", batch_size=None, prefetch_batches=0):
            for n in np.unique(batch["shard"]):
                n = int(n)
                mine = batch["shard"] == n
                pending.setdefault(n, []).append((batch["row"][mine], batch["vector"][mine]))
                if sum(len(rows) for rows, _ in pending[n]) == expected[n]:
                    parts = pending.pop(n)
                    rows = np.concatenate([r for r, _ in parts])
                    vectors = np.concatenate([v for _, v in parts])
                    yield n, vectors[np.argsort(rows, kind="stable")]  # in corpus order, whatever Ray did
        if pending:
            raise ReembedError(
                f"Ray returned incomplete shards {sorted(pending)}; run the command again to resume"
            )
    finally:
        if started:  # a private instance, or a connection this command opened: not left behind
            ray.shutdown()
