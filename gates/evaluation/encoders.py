"""The ways a model is turned into vectors for evaluation. Each encoder embeds at its full dim; every Matryoshka
dim is then the first `dim` values re-normalised, which is exactly what the service does with the one graph it
loads (service.embedder), so the ONNX numbers are the served numbers. `torch` is the SentenceTransformer itself,
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


def onnx_encoder(onnx_dir: Path, precision: str, threads: int | None = None) -> Encoder:
    from service.embedder import OnnxEmbedder

    embedder = OnnxEmbedder.from_export_dir(Path(onnx_dir), precision=precision, threads=threads)
    return Encoder(f"onnx-{precision}", embedder.full_dim, tuple(embedder.dims),
                   lambda texts: embedder.embed(list(texts), batch_size=BATCH_SIZE), embedder.info.graph_path,
                   dict(embedder.info.prompts or {}))


def torch_encoder(model_dir: Path, dims: Sequence[int], prompts: dict[str, str] | None = None) -> Encoder:
    """The SentenceTransformer itself; `prompts` (default: the model's own) should be its export's."""
    from training.models import load_sentence_transformer
    from training.prompts import model_prompts

    model = load_sentence_transformer(model_dir)
    full = model.get_embedding_dimension()
    return Encoder("torch", full, tuple(sorted(dims, reverse=True)),
                   lambda texts: model.encode(list(texts), batch_size=BATCH_SIZE, normalize_embeddings=True,
                                              convert_to_numpy=True, show_progress_bar=False),
                   str(model_dir), model_prompts(model) if prompts is None else dict(prompts))


def truncate(vectors: np.ndarray, dim: int) -> np.ndarray:
    """First `dim` values, L2-normalised again (Matryoshka truncation)."""
    cut = np.asarray(vectors[:, :dim], dtype=np.float32)
    return cut / np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12)
