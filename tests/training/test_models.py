"""Where a base model comes from: a folder, the bundled MiniLM by name, or a Hub id through the Hugging Face cache
(offline here: the cache path and the one-line errors are what can be tested without the Hub)."""

from __future__ import annotations

import shutil
import socket

import pytest

from training.errors import ConfigError
from training.models import load_sentence_transformer, resolve_model_path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch, tiny_model_dir):
    """An HF cache holding `someone/tiny-embedder` as huggingface_hub lays it out (refs/main -> snapshot)."""
    cache = tmp_path / "hub"
    repo = cache / "models--someone--tiny-embedder"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_offline_hub_id_loads_from_the_cache(hub_cache):
    path = resolve_model_path("someone/tiny-embedder")
    assert path == hub_cache / "models--someone--tiny-embedder" / "snapshots" / COMMIT
    assert load_sentence_transformer("someone/tiny-embedder").get_embedding_dimension() == 32


def test_offline_hub_id_not_in_the_cache_is_one_clear_line(hub_cache):
    with pytest.raises(
        ConfigError,
        match=r"^base model 'BAAI/bge-small-en-v1.5': not a local folder and not in "
        r"the Hugging Face cache, and the Hub is off \(HF_HUB_OFFLINE=1\); fetch "
        r"it where the Hub is reachable",
    ) as caught:
        resolve_model_path("BAAI/bge-small-en-v1.5")
    assert "\n" not in str(caught.value)


def test_unreachable_hub_is_one_clear_line(tmp_path, monkeypatch):
    with socket.socket() as sock:  # a port nothing listens on: connection refused at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(
        ConfigError,
        match=r"^base model 'someone/elsewhere': the Hugging Face Hub could not be "
        r"reached",
    ) as caught:
        resolve_model_path("someone/elsewhere")
    assert "\n" not in str(caught.value)


def test_a_path_like_name_that_does_not_exist_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(ConfigError, match=r"no such folder, and not a Hugging Face Hub id"):
        resolve_model_path(str(tmp_path / "missing" / "model"))


def test_the_bundled_name_stays_the_offline_default(minilm_dir):
    assert resolve_model_path("all-MiniLM-L6-v2") == minilm_dir
