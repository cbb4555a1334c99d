"""Files that readers never see half-written, and their digests: the one implementation the service package uses
(registry, aliases, drift references and summaries). `training` has its own twin in training/run_dir.py, because
the layering (ARCHITECTURE.md) keeps training from importing service."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (graphs are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    """Persist a rename inside `path` (os.replace is atomic, but only durable once the folder is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to a temp file in the same folder, fsync it, os.replace it over `path`, fsync the folder: a
    reader sees the old file or the new one, never a part. The temp name carries the pid, so two writers never
    share one, and `.{name}.tmp-*` is what a cleanup after a kill looks for."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
