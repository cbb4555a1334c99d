"""Queries and documents through one served graph (fp32, full dim), each side with the prompt that graph serves
with, through the run's embedding cache when there is one."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def encode_roles(
    onnx_dir: Path,
    queries: list[str],
    documents: list[str],
    cache_dir: Path | None,
    label: str,
    quiet: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    from gates.evaluation.encoders import onnx_encoder
    from gates.evaluation.evaluate import _embedder
    from service.model.prompts import apply_prompt, role_prompt
    from training.embedding_cache import EmbeddingCache

    encoder = onnx_encoder(Path(onnx_dir), "fp32")
    cache = EmbeddingCache(Path(cache_dir) / "embeddings") if cache_dir is not None else None
    embed = _embedder(encoder, cache, label, quiet)
    q = embed(apply_prompt(queries, role_prompt(encoder.prompts, "query")), "queries") if queries else None
    d = (
        embed(apply_prompt(documents, role_prompt(encoder.prompts, "document")), "corpus")
        if documents
        else None
    )
    return q, d
