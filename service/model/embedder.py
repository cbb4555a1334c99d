"""The served embedder: tokenize -> one ONNX graph -> unit vectors, with onnxruntime, tokenizers and numpy only.

    from service.model.embedder import OnnxEmbedder
    embedder = OnnxEmbedder.from_export_dir(Path("artifacts/runs/r1/onnx"), precision="int8")
    vectors = embedder.embed(["What is the dose?"], dimensions=128)     # float32 [1, 128], unit length

`from_export_dir` loads the full-dim graph and serves every exported dim from it: the first `dimensions` values,
L2-normalised again, equal the per-dim graph's output (the per-dim graph computes exactly that). `from_graph`
loads any single graph file, so the gates can evaluate each exported artifact as it is.

Texts are sorted by token count into batches, so a batch pads to similar lengths, and returned in input order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.errors import EmbedRequestError, ModelLoadError
from service.model.tokenization import TOKENIZER_FILE, TextTokenizer, TokenizedBatch, TokenizedTexts
from service.storage.atomic_files import sha256_of

if TYPE_CHECKING:
    import numpy as np

FORMAT_VERSION = 1  # of embedder.json, as written by training.export.export_run
PRECISIONS = ("fp32", "int8", "fp16")  # fp16: for the CUDA provider (the CPU one runs it, no faster)
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "sentence_embedding"
# onnxruntime's session-level graph optimisations, applied when a graph loads (nothing is rewritten on disk).
OPTIMIZATION_LEVELS = {
    "none": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
# onnxruntime's default. Measured with benchmarks/encode_speed.py --optimizations (MiniLM, batch 32, 2 threads,
# AVX-512 VNNI CPU): int8 "all" 1004 sentences/s median vs 693-800 for the lower levels; fp32 levels within noise.
DEFAULT_OPTIMIZATION = "all"
CONTRACT = (
    "inputs input_ids and attention_mask (int64 [batch, sequence]), one output sentence_embedding "
    "(float32 [batch, dim])"
)


@dataclass(frozen=True)
class EmbedderInfo:
    """What is loaded, for /info, logs and eval records. Export fields are None for a bare graph file."""

    graph_path: str
    graph_sha256: str | None
    precision: str | None
    graph_dim: int
    dims: tuple[int, ...]
    full_dim: int
    max_seq_length: int
    threads: int | None
    optimization: str
    export_id: str | None = None
    created_at: str | None = None
    source_model_sha256: str | None = None
    pooling: tuple[str, ...] | None = None
    prompts: dict[str, str] | None = (
        None  # {"query": ..., "document": ...} from embedder.json; see service/model/prompts.py
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class OnnxEmbedder:
    """Embeds texts with one exported graph. Build it with `from_export_dir` or `from_graph`."""

    def __init__(self, session: Any, tokenizer: TextTokenizer, info: EmbedderInfo) -> None:
        self._session = session
        self._tokenizer = tokenizer
        self.info = info

    @classmethod
    def from_export_dir(
        cls,
        onnx_dir: Path,
        precision: str = "fp32",
        threads: int | None = None,
        dim: int | None = None,
        verify_sha256: bool = True,
        optimization: str = DEFAULT_OPTIMIZATION,
        allow_spinning: bool = True,
        device: str | None = None,
    ) -> OnnxEmbedder:
        """Load the export written by `embedgate export`: the full-dim graph, or the per-dim graph for `dim`
        (which serves the exported dims up to `dim`). `allow_spinning=False` lets idle intra-op threads sleep
        instead of busy-waiting (onnxruntime's default), which the HTTP service needs: see _open_session. `device`:
        cpu | cuda[:N] | auto (None: $EMBEDGATE_DEVICE, else cpu), see service.model.devices."""
        onnx_dir = Path(onnx_dir)
        config = _read_embedder_config(onnx_dir)
        if precision not in config["precisions"]:
            raise ModelLoadError(
                f"precision {precision!r} is not in the export {onnx_dir}; available: "
                f"{config['precisions']} (int8 is missing if it was exported with --no-int8; fp16 is there "
                f"only when exported with --fp16 / export.fp16 and it kept parity: see export.json's fp16)"
            )
        dim = config["full_dim"] if dim is None else dim
        if dim not in config["dims"]:
            raise ModelLoadError(
                f"dim {dim!r} has no graph in the export {onnx_dir}; exported dims: {config['dims']}"
            )
        try:
            entry = config["graphs"][str(dim)][precision]
            graph_path = onnx_dir / entry["path"]
            expected_sha256 = entry["sha256"]
        except (KeyError, TypeError) as err:
            raise ModelLoadError(
                f"{onnx_dir / 'embedder.json'}: no usable graphs entry for dim {dim} {precision} "
                f"(missing {err}); the export is damaged: export again"
            ) from None
        if verify_sha256:
            _verify_sha256(graph_path, expected_sha256)
        session, graph_dim = _open_session(graph_path, threads, optimization, allow_spinning, device)
        if graph_dim != dim:
            raise ModelLoadError(
                f"{graph_path}: graph outputs {graph_dim} dims but embedder.json lists it as "
                f"dim {dim}; the export is inconsistent: export the model again"
            )
        tokenizer = TextTokenizer(onnx_dir / "tokenizer" / TOKENIZER_FILE, config["max_seq_length"])
        info = EmbedderInfo(
            graph_path=str(graph_path),
            graph_sha256=expected_sha256,
            precision=precision,
            graph_dim=graph_dim,
            dims=tuple(d for d in config["dims"] if d <= graph_dim),
            full_dim=config["full_dim"],
            max_seq_length=tokenizer.max_seq_length,
            threads=threads,
            optimization=optimization,
            export_id=config.get("export_id"),
            created_at=config.get("created_at"),
            source_model_sha256=config.get("source_model", {}).get("sha256"),
            pooling=tuple(config.get("pooling", ())) or None,
            prompts=dict(config.get("prompts") or {}),
        )
        return cls(session, tokenizer, info)

    @classmethod
    def from_graph(
        cls,
        graph_path: Path,
        tokenizer_dir: Path,
        dims: Sequence[int] | None = None,
        max_seq_length: int | None = None,
        threads: int | None = None,
        optimization: str = DEFAULT_OPTIMIZATION,
    ) -> OnnxEmbedder:
        """Load one graph file with the tokenizer in `tokenizer_dir`. `dims` (default: the graph's dim) are the
        dims it serves; `max_seq_length` defaults to the truncation written into tokenizer.json."""
        graph_path = Path(graph_path)
        session, graph_dim = _open_session(graph_path, threads, optimization)
        requested = [graph_dim] if dims is None else list(dims)
        bad = [
            d for d in requested if isinstance(d, bool) or not isinstance(d, int) or not 0 < d <= graph_dim
        ]
        if bad or not requested:
            raise ModelLoadError(
                f"dims {requested}: each must be an integer in 1..{graph_dim} (the graph's "
                f"output size); bad: {bad}"
            )
        served = tuple(sorted(set(requested), reverse=True))
        tokenizer = TextTokenizer(Path(tokenizer_dir) / TOKENIZER_FILE, max_seq_length)
        info = EmbedderInfo(
            graph_path=str(graph_path),
            graph_sha256=None,
            precision=None,
            graph_dim=graph_dim,
            dims=served,
            full_dim=graph_dim,
            max_seq_length=tokenizer.max_seq_length,
            threads=threads,
            optimization=optimization,
        )
        return cls(session, tokenizer, info)

    @property
    def dims(self) -> tuple[int, ...]:
        """The `dimensions` this embedder serves, largest first."""
        return self.info.dims

    @property
    def full_dim(self) -> int:
        return self.info.full_dim

    @property
    def graph_dim(self) -> int:
        return self.info.graph_dim

    @property
    def max_seq_length(self) -> int:
        return self.info.max_seq_length

    def tokenize(self, texts: Sequence[str], truncate: bool = True) -> TokenizedBatch:
        """Padded ids and mask for `texts`, with token counts before truncation and which texts were cut."""
        return self._tokenizer.tokenize(texts, truncate=truncate)

    def count_tokens(self, texts: Sequence[str]) -> tuple[int, ...]:
        """Tokens per text before truncation, special tokens included."""
        return self._tokenizer.count_tokens(texts)

    def encode(self, texts: Sequence[str], truncate: bool = True) -> TokenizedTexts:
        """Unpadded token ids per text (truncated to max_seq_length), with the counts before truncation: the one
        tokenisation a served request needs (its token limit check, usage count and batch placement read it)."""
        return self._tokenizer.encode(texts, truncate=truncate)

    def embed_tokens(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Full-dim unit vectors (float32 [len(ids), graph_dim]) for already tokenised rows, run as one batch
        padded to the longest row: the caller groups rows of similar length (the service's batcher does)."""
        import numpy as np

        input_ids, attention_mask = self._tokenizer.pad(ids)
        vectors = self._session.run(
            [OUTPUT_NAME], {"input_ids": input_ids, "attention_mask": attention_mask}
        )[0]
        if not np.isfinite(vectors).all():
            bad = sorted({int(row) for row in np.argwhere(~np.isfinite(vectors))[:, 0]})
            raise RuntimeError(
                f"{self.info.graph_path} produced non-finite values for rows {bad[:10]}: the "
                f"graph is broken; re-export the model"
            )
        return vectors

    def embed(
        self, texts: Sequence[str], dimensions: int | None = None, batch_size: int = 32, truncate: bool = True
    ) -> np.ndarray:
        """Unit-length float32 vectors [len(texts), dimensions] in input order (default: the largest dim)."""
        import numpy as np

        dimensions = self._check_dimensions(dimensions)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise EmbedRequestError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
        encoded = self._tokenizer.encode(texts, truncate=truncate)
        vectors = np.empty((len(encoded.ids), self.graph_dim), dtype=np.float32)
        by_length = sorted(range(len(encoded.ids)), key=lambda index: len(encoded.ids[index]))
        for start in range(0, len(by_length), batch_size):
            rows = by_length[start : start + batch_size]
            vectors[rows] = self.embed_tokens([encoded.ids[row] for row in rows])
        if dimensions < self.graph_dim:
            vectors = truncate_dims(vectors, dimensions)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _check_dimensions(self, dimensions: int | None) -> int:
        if dimensions is None:
            return self.dims[0]
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions not in self.dims:
            raise EmbedRequestError(
                f"dimensions {dimensions!r} is not served by this model; allowed: "
                f"{list(self.dims)} (or omit it for {self.dims[0]})"
            )
        return dimensions


def truncate_dims(vectors: np.ndarray, dimensions: int) -> np.ndarray:
    """Matryoshka truncation: the first `dimensions` values of each row, L2-normalised again (a slice of a unit
    vector is not one; infinity's known bug is skipping this). The floor is torch's F.normalize's."""
    import numpy as np

    vectors = np.asarray(vectors[:, :dimensions], dtype=np.float32)  # no copy when already float32
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _open_session(
    graph_path: Path,
    threads: int | None,
    optimization: str,
    allow_spinning: bool = True,
    device: str | None = "cpu",
) -> tuple[Any, int]:
    """An onnxruntime session for `graph_path`, checked against the contract; returns it and its output dim."""
    import onnxruntime as ort

    from service.model.devices import onnx_providers

    providers = onnx_providers(device)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ModelLoadError(
            f"threads: expected an integer >= 1 (or None for onnxruntime's default), got {threads!r}"
        )
    if not isinstance(optimization, str) or optimization not in OPTIMIZATION_LEVELS:
        raise ModelLoadError(
            f"optimization: expected one of {list(OPTIMIZATION_LEVELS)}, got {optimization!r}"
        )
    if not graph_path.is_file():
        raise ModelLoadError(f"{graph_path}: graph file not found")
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[optimization])
    options.intra_op_num_threads = threads or 0  # 0: onnxruntime picks (one per physical core)
    options.inter_op_num_threads = 1  # one graph, run sequentially: parallelism is inside each operator
    if not allow_spinning:
        # Spinning threads burn the cores between runs that a server's request handling (and any neighbour)
        # needs: benchmarks/serve_throughput.py served 1.6x more single sentences with it off on 2 shared cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(graph_path), options, providers=providers)
    except Exception as err:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
        raise ModelLoadError(f"{graph_path}: not a loadable ONNX graph: {type(err).__name__}: {err}") from err
    return session, _check_contract(session, graph_path)


def _check_contract(session: Any, graph_path: Path) -> int:
    inputs = {node.name: node for node in session.get_inputs()}
    outputs = session.get_outputs()
    found = (
        f"inputs {[(n.name, n.type, n.shape) for n in inputs.values()]}, "
        f"outputs {[(n.name, n.type, n.shape) for n in outputs]}"
    )
    problem = None
    if set(inputs) != set(INPUT_NAMES):
        problem = "wrong input names"
    elif any(inputs[name].type != "tensor(int64)" or len(inputs[name].shape) != 2 for name in INPUT_NAMES):
        problem = "inputs must be int64 and 2-d"
    elif len(outputs) != 1 or outputs[0].name != OUTPUT_NAME:
        problem = f"expected exactly one output named {OUTPUT_NAME!r}"
    elif outputs[0].type != "tensor(float)" or len(outputs[0].shape) != 2:
        problem = "the output must be float32 and 2-d"
    elif not isinstance(outputs[0].shape[1], int) or outputs[0].shape[1] < 1:
        problem = "the output's second axis must have a fixed size (the embedding dim)"
    if problem:
        raise ModelLoadError(
            f"{graph_path}: graph does not match the embedder contract ({problem}): expected "
            f"{CONTRACT}; found {found}. Export the model with `embedgate export`."
        )
    return int(outputs[0].shape[1])


def _read_embedder_config(onnx_dir: Path) -> dict[str, Any]:
    path = onnx_dir / "embedder.json"
    if not path.is_file():
        raise ModelLoadError(
            f"{path} not found: {onnx_dir} is not an embedgate export; create one with "
            f"`embedgate export RUN_DIR` (it writes RUN_DIR/onnx)"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{path}: not valid JSON ({err}); the export is damaged: export again") from err
    if not isinstance(config, dict) or config.get("format_version") != FORMAT_VERSION:
        version = config.get("format_version") if isinstance(config, dict) else None
        raise ModelLoadError(
            f"{path}: format_version {version!r}, this runtime reads {FORMAT_VERSION}; "
            f"export the model again with this version of embedgate"
        )
    missing = [
        key for key in ("full_dim", "dims", "max_seq_length", "precisions", "graphs") if key not in config
    ]
    if missing:
        raise ModelLoadError(f"{path}: missing keys {missing}; the export is damaged: export again")
    return config


def _verify_sha256(path: Path, expected: str) -> None:
    if not path.is_file():
        raise ModelLoadError(f"{path}: graph file listed in embedder.json is missing; export the model again")
    actual = sha256_of(path)
    if actual != expected:
        raise ModelLoadError(
            f"{path}: sha256 {actual[:16]}... does not match embedder.json's "
            f"{expected[:16]}...: the file changed after export; export the model again"
        )
