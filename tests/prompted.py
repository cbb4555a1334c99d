"""A tiny prompted model: the conftest's tiny BERT saved with a query and a document prompt, as e5 / bge / nomic
models ship them in config_sentence_transformers.json (the `prompted_model_dir` fixture in conftest builds it)."""

from __future__ import annotations

from pathlib import Path

QUERY_PROMPT = "query: "
DOCUMENT_PROMPT = "passage: "


def build_prompted_model(target: Path, seed: int = 0) -> Path:
    from sentence_transformers import SentenceTransformer

    from tests.conftest import build_tiny_model

    plain = build_tiny_model(target / "plain", seed=seed)
    model = SentenceTransformer(
        str(plain), device="cpu", prompts={"query": QUERY_PROMPT, "document": DOCUMENT_PROMPT}
    )
    out = target / "prompted"
    model.save(str(out), safe_serialization=True)
    return out
