"""The embedding cache: a hit never calls the encoder; anything that changes the vectors misses."""

from __future__ import annotations

import numpy as np
import pytest

from training.embedding_cache import EmbeddingCache, texts_sha256
from training.errors import ConfigError


class CountingEncoder:
    def __init__(self, dim: int = 4):
        self.dim, self.calls, self.texts = dim, 0, 0

    def __call__(self, texts):
        self.calls += 1
        self.texts += len(texts)
        rng = np.random.default_rng(len(texts))
        return rng.normal(size=(len(texts), self.dim)).astype(np.float32)


def test_second_lookup_is_a_hit_and_returns_the_same_vectors(tmp_path):
    encoder = CountingEncoder()
    cache = EmbeddingCache(tmp_path)
    first = cache.encode(["a", "b", "c"], model="m1", backend="onnx-fp32", dim=4, encode=encoder)
    again = EmbeddingCache(tmp_path).encode(
        ["a", "b", "c"], model="m1", backend="onnx-fp32", dim=4, encode=encoder
    )
    assert encoder.calls == 1
    np.testing.assert_array_equal(first, again)
    assert cache.stats.misses == 1 and cache.stats.encoded_texts == 3


@pytest.mark.parametrize(
    "change",
    [
        {"model": "m2"},
        {"backend": "onnx-int8"},
        {"texts": ["a", "b", "d"]},
        {"texts": ["b", "a", "c"]},
        {"extra": "prompt=query: "},
    ],
)
def test_anything_that_changes_the_vectors_misses(tmp_path, change):
    encoder = CountingEncoder()
    cache = EmbeddingCache(tmp_path)
    base = {"model": "m1", "backend": "onnx-fp32", "texts": ["a", "b", "c"], "extra": ""}
    cache.encode(base["texts"], model=base["model"], backend=base["backend"], dim=4, encode=encoder)
    changed = base | change
    cache.encode(
        changed["texts"],
        model=changed["model"],
        backend=changed["backend"],
        dim=4,
        encode=encoder,
        extra=changed["extra"],
    )
    assert encoder.calls == 2 and cache.stats.misses == 2


def test_texts_digest_is_length_prefixed():
    assert texts_sha256(["ab", "c"]) != texts_sha256(["a", "bc"])


def test_a_damaged_entry_is_encoded_again(tmp_path):
    encoder = CountingEncoder()
    cache = EmbeddingCache(tmp_path)
    cache.encode(["a", "b"], model="m", backend="torch", dim=4, encode=encoder)
    (entry,) = tmp_path.rglob("*.npy")
    entry.write_bytes(b"not numpy")
    vectors = cache.encode(["a", "b"], model="m", backend="torch", dim=4, encode=encoder)
    assert encoder.calls == 2 and vectors.shape == (2, 4)
    assert np.load(entry).shape == (2, 4)  # repaired in place
    assert not [p for p in tmp_path.rglob(".*tmp*")]  # no temp file left behind


def test_an_encoder_returning_the_wrong_shape_is_refused_and_not_stored(tmp_path):
    cache = EmbeddingCache(tmp_path)
    with pytest.raises(ValueError, match=r"returned shape \(2, 3\) for 2 texts at dim 4; expected \(2, 4\)"):
        cache.encode(
            ["a", "b"], model="m", backend="torch", dim=4, encode=lambda t: np.zeros((2, 3), np.float32)
        )
    assert not list(tmp_path.rglob("*.npy"))


def test_an_unwritable_folder_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot create it .*set cache.dir to a writable folder"):
        EmbeddingCache(blocker / "cache")
