"""A tiny prompted model: the conftest's tiny BERT saved with a query and a document prompt, as e5 / bge / nomic
models ship them in config_sentence_transformers.json. Import the fixture into a test module to use it."""

from __future__ import annotations

from pathlib import Path

import pytest

QUERY_PROMPT = "query: "
DOCUMENT_PROMPT = "passage: "


def build_prompted_model(target: Path, seed: int = 0) -> Path:
    from sentence_transformers import SentenceTransformer

    from tests.conftest import build_tiny_model

    plain = build_tiny_model(target / "plain", seed=seed)
    model = SentenceTransformer(str(plain), device="cpu",
                                prompts={"query": QUERY_PROMPT, "document": DOCUMENT_PROMPT})
    out = target / "prompted"
    model.save(str(out), safe_serialization=True)
    return out


@pytest.fixture(scope="session")
def prompted_model_dir(tmp_path_factory) -> Path:
    return build_prompted_model(tmp_path_factory.mktemp("prompted-model"))
