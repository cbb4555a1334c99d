"""Embeddings computed once: a folder of .npy files keyed by what determines them.

    cache = EmbeddingCache(Path("artifacts/cache/embeddings"))
    vectors = cache.encode(texts, model=fingerprint, backend="onnx-fp32", dim=384, encode=encoder.encode)

The key is (model identity, backend, dim, sha256 of the texts in order, extra), where the model identity is a
sha256 of what produced the vectors (an ONNX graph and its tokenizer, or a SentenceTransformer folder), so a
baseline that did not change (the champion, the base model) is never encoded again, and a changed graph, corpus
or backend can never hit a stale entry. `extra` carries anything else that changes the vectors (a prompt, the
max sequence length). Only full-dim vectors are stored: every smaller Matryoshka dim of the same graph is its
prefix, re-normalised, so it is derived, not stored.

Why hand-written: the usual caches (joblib.Memory, diskcache) key on a function's pickled arguments; here the key
must be the *content* identity of a model on disk and of a text list, which they cannot see, and the values are
plain arrays best stored as .npy (memory-mappable, readable by anything). Writes go through a temp file and
os.replace, so a crash or a concurrent writer never leaves half an entry; an unreadable or misshapen entry is a miss.

Bounded by gates/cache_prune.py (`embedgate cache prune`, and after every pipeline run): least recently used
first. "Used" is the .npy's mtime, set when an entry is written and again on every hit (atime cannot be trusted:
most filesystems are mounted relatime or noatime).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.errors import ConfigError

FORMAT = 1  # bump when what an entry means changes: old entries then simply miss


def texts_sha256(texts: Sequence[str]) -> str:
    """One digest over the texts in order (length-prefixed, so ["ab", "c"] and ["a", "bc"] differ)."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def folder_fingerprint(folder: Path) -> str:
    """Identity of a model folder: one sha256 over every file's relative path and content."""
    # The same digest the export records as its source model's identity.
    from training.export.export_run import _tree_sha256

    return _tree_sha256(Path(folder))


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    encoded_texts: int = 0
    events: list[dict] = field(default_factory=list)  # one per lookup: label, backend, hit, texts

    def to_dict(self) -> dict:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "encoded_texts": self.encoded_texts,
            "lookups": self.events,
        }


class EmbeddingCache:
    """Full-dim embeddings on disk, one .npy (+ a .json that says what it is) per key."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(
                f"embedding cache folder {self.folder}: cannot create it ({err.strerror}); set "
                f"cache.dir to a writable folder, or cache.enabled: false"
            ) from None
        if not os.access(self.folder, os.W_OK):
            raise ConfigError(
                f"embedding cache folder {self.folder} is not writable; set cache.dir to a writable "
                f"folder, or cache.enabled: false"
            )
        self.stats = CacheStats()

    @staticmethod
    def key(model: str, backend: str, dim: int, texts: Sequence[str], extra: str = "") -> str:
        payload = {
            "format": FORMAT,
            "model": model,
            "backend": backend,
            "dim": int(dim),
            "texts": texts_sha256(texts),
            "extra": extra,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def encode(
        self,
        texts: Sequence[str],
        *,
        model: str,
        backend: str,
        dim: int,
        encode: Callable[[Sequence[str]], np.ndarray],
        extra: str = "",
        label: str = "",
    ) -> np.ndarray:
        """The cached vectors for `texts`, or `encode(texts)` stored under the key. -> float32 [len(texts), dim]."""
        texts = list(texts)
        key = self.key(model, backend, dim, texts, extra)
        path = self.folder / key[:2] / f"{key}.npy"
        cached = self._load(path, len(texts), dim)
        event = {"label": label, "backend": backend, "texts": len(texts), "hit": cached is not None}
        self.stats.events.append(event)
        if cached is not None:
            self.stats.hits += 1
            return cached
        self.stats.misses += 1
        self.stats.encoded_texts += len(texts)
        vectors = np.ascontiguousarray(encode(texts), dtype=np.float32)
        if vectors.shape != (len(texts), dim):
            raise ValueError(
                f"{backend} encoder returned shape {vectors.shape} for {len(texts)} texts at dim "
                f"{dim}; expected ({len(texts)}, {dim})"
            )
        self._store(
            path,
            vectors,
            {
                "model": model,
                "backend": backend,
                "dim": dim,
                "n": len(texts),
                "texts_sha256": texts_sha256(texts),
                "extra": extra,
                "label": label,
            },
        )
        return vectors

    @staticmethod
    def _load(path: Path, n: int, dim: int) -> np.ndarray | None:
        if not path.is_file():
            return None
        try:
            vectors = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None  # damaged entry: encode again and overwrite it
        if vectors.shape != (n, dim) or vectors.dtype != np.float32 or not np.isfinite(vectors).all():
            return None
        _mark_used(path)
        return vectors

    @staticmethod
    def _store(path: Path, vectors: np.ndarray, meta: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
        try:
            np.save(tmp, vectors, allow_pickle=False)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        meta_tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.json")
        meta_tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        os.replace(meta_tmp, path.with_suffix(".json"))


def _mark_used(path: Path) -> None:
    """Set the entry's last use (its mtime) to now, for LRU pruning. Best effort: a read-only shared cache still
    serves hits, and an entry pruned meanwhile was already read."""
    try:
        os.utime(path)
    except OSError:
        pass


@dataclass(frozen=True)
class CacheEntry:
    """One stored embedding: the .npy and the .json beside it."""

    key: str
    files: tuple[Path, ...]
    size_bytes: int
    last_used: float  # epoch seconds (the .npy's mtime)

    def remove(self) -> None:
        for path in self.files:  # the .npy first: without it the entry is a miss, whatever is left
            path.unlink(missing_ok=True)


def list_entries(folder: Path) -> Iterator[CacheEntry]:
    """Every complete entry under `folder` (an EmbeddingCache folder); nothing is created or changed."""
    for npy in sorted(Path(folder).glob("??/*.npy")):
        if npy.name.startswith("."):
            continue  # a write in progress (or one a killed process left): see stale_temp_files
        meta = npy.with_suffix(".json")
        try:
            stat = npy.stat()
            meta_size = meta.stat().st_size if meta.exists() else None
        except FileNotFoundError:  # pruned by another process meanwhile
            continue
        files = (npy,) if meta_size is None else (npy, meta)
        size = stat.st_size + (meta_size or 0)
        yield CacheEntry(key=npy.stem, files=files, size_bytes=size, last_used=stat.st_mtime)


def stale_temp_files(folder: Path, older_than_s: float = 86_400) -> list[Path]:
    """Temp files of writes that never finished (the writer was killed) older than `older_than_s`: no live write
    takes a day, so these are safe to delete."""
    cutoff = time.time() - older_than_s
    stale = []
    for path in Path(folder).glob("??/.*.tmp.*"):
        try:
            if path.stat().st_mtime < cutoff:
                stale.append(path)
        except FileNotFoundError:
            continue
    return stale
