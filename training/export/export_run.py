"""Export a SentenceTransformer to one ONNX graph per Matryoshka dim (fp32 + int8, fp16 on request), each checked.

    from training.export.export_run import export_run
    result = export_run(Path("artifacts/runs/r1/model"), Path("artifacts/runs/r1/onnx"))

Layout written (all or nothing: built in a temp dir beside `out_dir`, then moved into place with os.replace):

    out_dir/d{dim}/model.onnx        fp32 graph: input_ids, attention_mask -> sentence_embedding [batch, dim]
    out_dir/d{dim}/model_int8.onnx   its dynamically quantised int8 twin (unless int8=False)
    out_dir/d{dim}/model_fp16.onnx   its float16 twin (fp16=True, and only where it keeps parity: see below)
    out_dir/tokenizer/               tokenizer.json (+ configs) loadable by `tokenizers` alone
    out_dir/embedder.json            what the runtime (service.model.embedder) reads
    out_dir/export.json              per graph: sha256, size, opset, parity against the PyTorch model

Parity is measured on `training.data.probe_texts` through the exported tokenizer.json, so it covers the tokenizer export
too: reference = SentenceTransformer.encode -> first `dim` values -> L2 normalise. An fp32 graph below
`min_fp32_cosine` (0.9999) or an int8 graph below `min_int8_cosine` (0.90: catches broken quantisation, e.g.
per-tensor scales gave 0.75 on a long text; the quality decision for int8 belongs to the retrieval gates) fails
the export, and nothing is left behind.

fp16 (training/export/fp16.py, for onnxruntime's CUDA provider) is judged against the fp32 graph it was converted from,
the graph the gate evaluated: min cosine >= `min_fp16_cosine` (0.999) on the same probe batch. It is all or
nothing across dims and never fails the export: below the bar on any dim, no fp16 graph is written, embedder.json
does not list fp16, and export.json's `fp16` entry says why (`refused`, with each dim's parity). The check runs on
onnxruntime's CPU provider (there on every install), and also on its CUDA provider when this onnxruntime has one,
keeping the worse of the two.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from training.data.probe_texts import PROBE_TEXTS
from training.errors import ConfigError, ExportError
from training.export.fp16 import MIN_FP16_COSINE, Fp16Settings, convert_fp16
from training.export.onnx_graph import (
    INPUT_NAMES,
    MAX_OPSET,
    MIN_OPSET,
    OUTPUT_NAME,
    ModelSpec,
    export_graph,
    inspect_model,
)
from training.export.quantize import Int8Settings, quantize_int8
from training.finetune.defaults import matryoshka_dims_for
from training.prompts import resolve_prompts
from training.run_dir import sha256_file

FORMAT_VERSION = 1
PRECISION_FILES = {"fp32": "model.onnx", "int8": "model_int8.onnx", "fp16": "model_fp16.onnx"}
# fp16 graphs normalise their output again in fp32 (training/export/fp16.py), so lengths are 1 to fp32 precision; 1e-4
# still catches one that normalised in fp16 only (1 +- 5e-4 measured on the tiny test model).
MAX_FP16_NORM_ERROR = 1e-4


@dataclass(frozen=True)
class Parity:
    """Agreement of one graph with its reference on the probe set: the PyTorch model for fp32 and int8, the fp32
    graph for fp16 (`reference` says which)."""

    texts: int
    max_abs_diff: float
    min_cosine: float
    mean_cosine: float
    worst_text_index: int
    reference: str = "pytorch"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GraphRecord:
    """One exported graph file; `path` is relative to the export directory."""

    path: str
    dim: int
    precision: str
    sha256: str
    size_bytes: int
    opset: int
    parity: Parity

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "parity": self.parity.to_dict()}


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    model_dir: Path
    dims: tuple[int, ...]
    spec: ModelSpec
    graphs: tuple[GraphRecord, ...]
    int8: Int8Settings | None
    seconds: float
    # None when fp16 was not asked for; else {"settings", "status": "written" | "refused", "reason", "parity"}
    fp16: dict[str, Any] | None = None

    def graph(self, dim: int, precision: str = "fp32") -> GraphRecord:
        for record in self.graphs:
            if record.dim == dim and record.precision == precision:
                return record
        have = sorted({(record.dim, record.precision) for record in self.graphs})
        raise KeyError(f"no {precision} graph for dim {dim}; exported: {have}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "model_dir": str(self.model_dir),
            "dims": list(self.dims),
            "model": self.spec.to_dict(),
            "graphs": [record.to_dict() for record in self.graphs],
            "int8": self.int8.to_dict() if self.int8 else None,
            "fp16": self.fp16,
            "seconds": round(self.seconds, 3),
        }


def default_dims(full_dim: int) -> tuple[int, ...]:
    """The model dim, then powers of two below it down to 64: 384 -> (384, 256, 128, 64), 768 -> (768, 512, ...,
    64). The training defaults' Matryoshka dims (one rule for both); a model of 64 or fewer dims keeps its own."""
    return tuple(matryoshka_dims_for(full_dim))


def validate_dims(dims: Sequence[int], full_dim: int) -> tuple[int, ...]:
    """Dims as given, checked and sorted largest first. The model dim must be among them: the runtime serves every
    dim from the full graph by slicing."""
    if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence) or len(dims) == 0:
        raise ConfigError(f"dims: expected a non-empty list of integers in 1..{full_dim}, got {dims!r}")
    bad = [
        dim for dim in dims if isinstance(dim, bool) or not isinstance(dim, int) or not 0 < dim <= full_dim
    ]
    if bad:
        raise ConfigError(
            f"dims: {bad} outside the allowed range 1..{full_dim} (the model dim); "
            f"got {list(dims)}, e.g. use {list(default_dims(full_dim))}"
        )
    if len(set(dims)) != len(dims):
        raise ConfigError(f"dims: duplicates in {list(dims)}; list each dim once")
    if full_dim not in dims:
        raise ConfigError(
            f"dims: {list(dims)} must include the model dim {full_dim} (the served graph; smaller "
            f"dims are sliced from it); add {full_dim}"
        )
    return tuple(sorted(dims, reverse=True))


def export_run(
    model_dir: Path,
    out_dir: Path,
    dims: Sequence[int] | None = None,
    int8: bool = True,
    opset: int = 17,
    probe_texts: Sequence[str] | None = None,
    overwrite: bool = False,
    min_fp32_cosine: float = 0.9999,
    min_int8_cosine: float = 0.90,
    prompts: Mapping[str, str | None] | None = None,
    fp16: bool = False,
    min_fp16_cosine: float = MIN_FP16_COSINE,
) -> ExportResult:
    """Export the SentenceTransformer saved in `model_dir` to `out_dir` (layout in the module docstring).

    `fp16` adds a float16 twin per dim where it keeps parity with fp32 (off by default: onnxruntime's CPU provider
    runs it no faster than fp32, see docs/performance.md).

    `prompts` ({"query", "document"}; None = the model's own) are recorded in embedder.json for the service, which
    prepends them as text, as sentence-transformers does; parity is also checked on prompted probe texts."""
    started = time.perf_counter()
    model_dir, out_dir = Path(model_dir).resolve(), Path(out_dir).resolve()
    texts = _check_inputs(model_dir, out_dir, opset, probe_texts, overwrite)
    model = _load_model(model_dir)
    spec = inspect_model(model, model_dir)
    prompts = resolve_prompts(prompts, model)
    texts = texts + tuple(
        prompt + text for prompt in dict.fromkeys(prompts.values()) if prompt for text in texts[:2]
    )
    dims = validate_dims(dims, spec.full_dim) if dims is not None else default_dims(spec.full_dim)
    settings = Int8Settings() if int8 else None
    half = Fp16Settings(min_cosine=min_fp16_cosine) if fp16 else None
    source_sha256 = _tree_sha256(model_dir)  # before staging exists, in case out_dir lies inside model_dir

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        tokenizer_file = _write_tokenizer(model, spec, staging / "tokenizer")
        reference = _reference_embeddings(model, texts)
        feeds = _probe_feeds(tokenizer_file, texts, model[0].tokenizer.pad_token_id or 0)
        graphs: list[GraphRecord] = []
        halves: list[_Fp16Candidate] = []
        for dim in dims:
            folder = staging / f"d{dim}"
            folder.mkdir()
            fp32_path = folder / PRECISION_FILES["fp32"]
            export_graph(model, spec, dim, fp32_path, opset)
            expected = _unit_prefix(reference, dim)
            graphs.append(
                _check_graph(staging, fp32_path, dim, "fp32", opset, feeds, expected, min_fp32_cosine)
            )
            if settings is not None:
                int8_path = folder / PRECISION_FILES["int8"]
                quantize_int8(fp32_path, int8_path, settings)
                graphs.append(
                    _check_graph(staging, int8_path, dim, "int8", opset, feeds, expected, min_int8_cosine)
                )
            if half is not None:
                halves.append(_fp16_twin(staging, fp32_path, dim, opset, feeds, half))
        fp16_outcome = _keep_or_drop_fp16(staging, halves, half) if half is not None else None
        if fp16_outcome is not None and fp16_outcome["status"] == "written":
            graphs += [candidate.record for candidate in halves]
        result = ExportResult(
            out_dir=out_dir,
            model_dir=model_dir,
            dims=dims,
            spec=spec,
            graphs=tuple(graphs),
            int8=settings,
            seconds=time.perf_counter() - started,
            fp16=fp16_outcome,
        )
        _write_json(staging / "embedder.json", _embedder_config(result, source_sha256, texts, prompts))
        _write_json(staging / "export.json", result.to_dict())
        _fsync_tree(staging)
        _move_into_place(staging, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync_tree(out_dir.parent, recursive=False)  # persist the rename itself
    return result


def _check_inputs(
    model_dir: Path, out_dir: Path, opset: int, probe_texts: Sequence[str] | None, overwrite: bool
) -> tuple[str, ...]:
    if not (model_dir / "modules.json").is_file():
        raise ConfigError(
            f"model_dir {model_dir}: expected a SentenceTransformer save (a folder with "
            f"modules.json), found {'no such folder' if not model_dir.is_dir() else 'no modules.json'}; "
            f"pass the run's model/ folder"
        )
    if out_dir.exists() and not overwrite:
        raise ConfigError(
            f"out_dir {out_dir} already exists; exports are immutable: choose another folder, "
            f"or pass overwrite=True (--overwrite) to replace it"
        )
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(f"opset: expected an integer in {MIN_OPSET}..{MAX_OPSET}, got {opset!r}")
    texts = PROBE_TEXTS if probe_texts is None else probe_texts
    if isinstance(texts, str) or not texts or not all(isinstance(text, str) for text in texts):
        raise ConfigError(f"probe_texts: expected a non-empty list of strings, got {texts!r:.200}")
    return tuple(texts)


def _load_model(model_dir: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    except Exception as err:  # any loader failure means the folder is not a usable model
        raise ExportError(
            f"{model_dir}: cannot load as a SentenceTransformer: {type(err).__name__}: {err}"
        ) from err
    model.truncate_dim = None  # dims are the export's business; the reference must be the full embedding
    return model.eval()


def _write_tokenizer(model: Any, spec: ModelSpec, folder: Path) -> Path:
    """Save the model's tokenizer, with tokenizer.json set to truncate at max_seq_length and not pad: the model's
    own tokenizer.json may carry other settings (all-MiniLM-L6-v2's says truncate and pad to 128), and ST applies
    any do_lower_case to the in-memory backend, so the backend is what gets saved."""
    from tokenizers import Tokenizer

    hf_tokenizer = model[0].tokenizer
    hf_tokenizer.save_pretrained(str(folder))
    backend = Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.enable_truncation(max_length=spec.max_seq_length)
    path = folder / "tokenizer.json"
    backend.save(str(path))
    return path


def _reference_embeddings(model: Any, texts: tuple[str, ...]) -> Any:
    import numpy as np

    embeddings = model.encode(
        list(texts), batch_size=len(texts), convert_to_numpy=True, show_progress_bar=False
    )
    return np.asarray(embeddings, dtype=np.float64)


def _probe_feeds(tokenizer_file: Path, texts: tuple[str, ...], pad_id: int) -> dict[str, Any]:
    """All probe texts in one right-padded batch: short texts then run next to the long one's padding."""
    import numpy as np
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.enable_padding(pad_id=pad_id)
    encodings = tokenizer.encode_batch(list(texts))
    return {
        "input_ids": np.array([encoding.ids for encoding in encodings], dtype=np.int64),
        "attention_mask": np.array([encoding.attention_mask for encoding in encodings], dtype=np.int64),
    }


def _unit_prefix(reference: Any, dim: int) -> Any:
    """The first `dim` values of each reference row, L2-normalised: what the graph for `dim` must output."""
    import numpy as np

    return reference[:, :dim] / np.linalg.norm(reference[:, :dim], axis=1, keepdims=True)


def _run_graph(path: Path, feeds: dict[str, Any], provider: str = "CPUExecutionProvider") -> Any:
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=[provider])
    return session.run([OUTPUT_NAME], {name: feeds[name] for name in INPUT_NAMES})[0].astype(np.float64)


def _parity(path: Path, dim: int, output: Any, expected: Any, reference: str = "pytorch") -> Parity:
    import numpy as np

    if output.shape != expected.shape:
        raise ExportError(f"{path.name} (dim {dim}): output shape {output.shape}, expected {expected.shape}")
    with np.errstate(invalid="ignore", divide="ignore"):  # a non-finite output is judged by the caller
        cosines = (output * expected).sum(axis=1) / np.linalg.norm(output, axis=1)
    cosines = np.where(np.isfinite(cosines), cosines, -1.0)  # NaN would compare as "not below" any bar
    return Parity(
        texts=len(cosines),
        max_abs_diff=float(np.nan_to_num(np.abs(output - expected), nan=np.inf).max()),
        min_cosine=float(cosines.min()),
        mean_cosine=float(cosines.mean()),
        worst_text_index=int(cosines.argmin()),
        reference=reference,
    )


def _record(root: Path, path: Path, dim: int, precision: str, opset: int, parity: Parity) -> GraphRecord:
    return GraphRecord(
        path=path.relative_to(root).as_posix(),
        dim=dim,
        precision=precision,
        sha256=sha256_file(path),
        size_bytes=path.stat().st_size,
        opset=opset,
        parity=parity,
    )


def _check_graph(
    root: Path,
    path: Path,
    dim: int,
    precision: str,
    opset: int,
    feeds: dict[str, Any],
    expected: Any,
    min_cosine: float,
) -> GraphRecord:
    import numpy as np

    output = _run_graph(path, feeds)
    parity = _parity(path, dim, output, expected)
    if not np.isfinite(output).all() or parity.min_cosine < min_cosine:
        raise ExportError(
            f"{precision} graph for dim {dim} does not reproduce the model: min cosine {parity.min_cosine:.6f} "
            f"(probe text {parity.worst_text_index}), expected >= {min_cosine}; mean {parity.mean_cosine:.6f}. "
            f"Nothing was written. Check the model's modules, or report this model as unsupported."
        )
    return _record(root, path, dim, precision, opset, parity)


@dataclass(frozen=True)
class _Fp16Candidate:
    record: GraphRecord
    providers: tuple[str, ...]  # where it was measured; the worst counts
    norm_error: float  # max |length - 1| of its outputs: clients are promised unit vectors


def _fp16_twin(
    root: Path, fp32_path: Path, dim: int, opset: int, feeds: dict[str, Any], settings: Fp16Settings
) -> _Fp16Candidate:
    """Convert, then measure against the fp32 graph on the CPU provider and, when this onnxruntime has it and it
    starts (a GPU build on a machine without a usable GPU does not), the CUDA one. Judged later, over all dims, by
    _keep_or_drop_fp16."""
    import numpy as np
    import onnxruntime as ort

    fp16_path = fp32_path.with_name(PRECISION_FILES["fp16"])
    convert_fp16(fp32_path, fp16_path, settings)
    expected = _run_graph(fp32_path, feeds)
    outputs = {"CPUExecutionProvider": _run_graph(fp16_path, feeds)}
    if "CUDAExecutionProvider" in ort.get_available_providers():
        try:
            outputs["CUDAExecutionProvider"] = _run_graph(fp16_path, feeds, "CUDAExecutionProvider")
        except Exception:  # noqa: BLE001 - no usable GPU here: the CPU measurement stands alone
            pass
    parities = [_parity(fp16_path, dim, output, expected, "fp32 graph") for output in outputs.values()]
    with np.errstate(invalid="ignore"):
        norm_error = max(float(np.abs(np.linalg.norm(out, axis=1) - 1).max()) for out in outputs.values())
    return _Fp16Candidate(
        record=_record(root, fp16_path, dim, "fp16", opset, min(parities, key=lambda p: p.min_cosine)),
        providers=tuple(sorted(outputs)),
        norm_error=norm_error if np.isfinite(norm_error) else float("inf"),
    )


def _keep_or_drop_fp16(
    root: Path, candidates: list[_Fp16Candidate], settings: Fp16Settings
) -> dict[str, Any]:
    """fp16 for every dim, or for none (so embedder.json's `precisions` stays true of every dim): below the bar
    (or not unit length) on any dim, every fp16 file is deleted and the reason kept for export.json."""
    records = [candidate.record for candidate in candidates]
    worst = min(records, key=lambda record: record.parity.min_cosine)
    longest = max(candidates, key=lambda candidate: candidate.norm_error)
    reason = None
    if worst.parity.min_cosine < settings.min_cosine:
        reason = (
            f"fp16 graph for dim {worst.dim} has min cosine {worst.parity.min_cosine:.6f} to the fp32 graph "
            f"(probe text {worst.parity.worst_text_index}), below {settings.min_cosine}"
        )
    elif longest.norm_error > MAX_FP16_NORM_ERROR:
        reason = (
            f"fp16 graph for dim {longest.record.dim} outputs vectors of length 1 +- {longest.norm_error:.2e}, "
            f"expected unit length within {MAX_FP16_NORM_ERROR}"
        )
    outcome: dict[str, Any] = {
        "settings": settings.to_dict(),
        "status": "refused" if reason else "written",
        "reason": f"{reason}; no fp16 graph was written: serve fp32 (or int8) for this model"
        if reason
        else None,
        "parity": {str(record.dim): record.parity.to_dict() for record in records},
        "max_norm_error": {str(c.record.dim): c.norm_error for c in candidates},
        # onnxruntime providers the parity was measured on (the worst one counts)
        "measured_on": sorted({provider for candidate in candidates for provider in candidate.providers}),
    }
    if reason:
        for record in records:
            (root / record.path).unlink(missing_ok=True)
    return outcome


def _embedder_config(
    result: ExportResult, source_sha256: str, texts: tuple[str, ...], prompts: dict[str, str]
) -> dict[str, Any]:
    graphs: dict[str, dict[str, Any]] = {}
    for record in result.graphs:
        graphs.setdefault(str(record.dim), {})[record.precision] = {
            "path": record.path,
            "sha256": record.sha256,
        }
    identity = hashlib.sha256("".join(record.sha256 for record in result.graphs).encode()).hexdigest()
    spec = result.spec
    return {
        "format_version": FORMAT_VERSION,
        "export_id": identity[:16],
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "source_model": {"path": str(result.model_dir), "sha256": source_sha256},
        "architecture": spec.architecture,
        "modules": list(spec.modules),
        "full_dim": spec.full_dim,
        "dims": list(result.dims),
        "max_seq_length": spec.max_seq_length,
        "pooling": list(spec.pooling),
        "normalize": True,  # every graph ends in L2 normalisation, whatever the model's own modules
        "inputs": list(INPUT_NAMES),
        "output": OUTPUT_NAME,
        "opset": result.graphs[0].opset,
        "tokenizer": "tokenizer/tokenizer.json",
        "precisions": sorted({record.precision for record in result.graphs}),
        "graphs": graphs,
        "probe_texts": len(texts),
        "prompts": prompts,  # prepended by the service per input_type (service/model/prompts.py)
    }


def _move_into_place(staging: Path, out_dir: Path, overwrite: bool) -> None:
    """Rename the finished export into place; an existing export is swapped out first and restored on failure."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    if not overwrite:  # appeared while we were exporting
        raise ConfigError(f"out_dir {out_dir} appeared during the export; pass overwrite=True to replace it")
    retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    os.replace(out_dir, retired / "export")
    try:
        os.replace(staging, out_dir)
    except BaseException:
        os.replace(retired / "export", out_dir)
        retired.rmdir()
        raise
    shutil.rmtree(retired, ignore_errors=True)


def _fsync_tree(folder: Path, recursive: bool = True) -> None:
    """Flush files and folders to disk before a rename publishes them: a crash must not leave a complete-looking
    export with empty files."""
    paths = [*folder.rglob("*"), folder] if recursive else [folder]
    for path in paths:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _tree_sha256(folder: Path) -> str:
    """One digest over every file's relative path and content: the source model's identity."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + sha256_file(path).encode())
    return digest.hexdigest()
