"""The ways a model is turned into vectors for evaluation. Each encoder embeds at its full dim; every Matryoshka
dim is then the first `dim` values re-normalised, which is exactly what the service does with the one graph it
loads (service.model.embedder), so the ONNX numbers are the served numbers. `torch` is the SentenceTransformer itself,
kept as a reference to show what export and quantisation cost."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BATCH_SIZE = 32


@dataclass(frozen=True)
class Encoder:
    backend: str  # onnx-fp32 | onnx-int8 | torch
    full_dim: int
    dims: tuple[int, ...]
    encode: Callable[[Sequence[str]], np.ndarray]
    source: str
    prompts: dict[str, str] = field(default_factory=dict)  # query/document prompts the evaluation prepends
    identity: str = (
        ""  # sha256 of what produces the vectors (graph + tokenizer, or model folder): the cache key
    )


def _identity(*parts: object) -> str:
    import hashlib

    return hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()


def onnx_encoder(onnx_dir: Path, precision: str, threads: int | None = None, device: str = "cpu") -> Encoder:
    """The served graph at full dim (sha256-verified on load); `device` cuda[:N] uses onnxruntime's CUDA provider."""
    from service.model.embedder import OnnxEmbedder
    from training.run_dir import sha256_file

    embedder = OnnxEmbedder.from_export_dir(
        Path(onnx_dir), precision=precision, threads=threads, device=device
    )
    tokenizer = sha256_file(Path(onnx_dir) / "tokenizer" / "tokenizer.json")
    identity = _identity(embedder.info.graph_sha256, tokenizer, embedder.max_seq_length)
    return Encoder(
        f"onnx-{precision}",
        embedder.full_dim,
        tuple(embedder.dims),
        lambda texts: embedder.embed(list(texts), batch_size=BATCH_SIZE),
        embedder.info.graph_path,
        identity=identity,
        prompts=dict(embedder.info.prompts or {}),
    )


def torch_encoder(
    model_dir: Path, dims: Sequence[int], prompts: dict[str, str] | None = None, device: str = "cpu"
) -> Encoder:
    """The SentenceTransformer itself; `prompts` (default: the model's own) should be its export's."""
    from training.embedding_cache import folder_fingerprint
    from training.models import load_sentence_transformer
    from training.prompts import model_prompts

    model = load_sentence_transformer(model_dir, device=device)
    full = model.get_embedding_dimension()
    return Encoder(
        "torch",
        full,
        tuple(sorted(dims, reverse=True)),
        lambda texts: model.encode(
            list(texts),
            batch_size=BATCH_SIZE,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        ),
        str(model_dir),
        identity=_identity(folder_fingerprint(model_dir), model.max_seq_length),
        prompts=model_prompts(model) if prompts is None else dict(prompts),
    )
