"""Keep the cache folder (`cache.dir`) bounded: least recently used entries go first, and anything unused for too
long goes regardless.

    info = cache_info(Path("artifacts/cache"))
    result = prune_cache(Path("artifacts/cache"), CacheBounds(max_gb=2, max_age_days=30), keep_since=run_started)

The folder holds two kinds of entry, both rebuilt on demand, so deleting any of them is always safe (the next run
encodes or exports again):
- `embeddings/xx/<key>.npy` (+ `.json`): training.embedding_cache; last use = the .npy's mtime, set on each hit.
- `exports/<name>/`: the base model's export (gates/evaluation/evaluate.py); last use = the folder's mtime, set
  each time it is copied into a run.

`keep_since` protects everything used at or after that time (the pipeline passes its start, so a run never
evicts what it just read, even when one corpus alone is over the size bound). Temp files and half-written export
folders older than a day (a killed writer's leftovers: no live write takes that long) are removed too.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gates.errors import EmbedgateGateError
from training.embedding_cache import list_entries, stale_temp_files

EMBEDDINGS, EXPORTS = "embeddings", "exports"
# Defaults of cache.max_gb / cache.max_age_days. A SciFact corpus is about 8 MB per (graph, backend) and a pipeline
# run adds its candidate's two or three, so 2 GB holds on the order of a hundred runs of history; 30 days keeps a
# champion that a weekly or monthly CI run still reads (each read renews it), and drops what no run touched.
DEFAULT_MAX_GB = 2.0
DEFAULT_MAX_AGE_DAYS = 30.0
LEFTOVER_AGE_S = 86_400.0


class CacheBoundsError(EmbedgateGateError):
    """A cache bound that is not a positive number."""


@dataclass(frozen=True)
class CacheBounds:
    """Upper bounds; None = unbounded on that axis."""

    max_gb: float | None = DEFAULT_MAX_GB
    max_age_days: float | None = DEFAULT_MAX_AGE_DAYS

    def __post_init__(self) -> None:
        for name in ("max_gb", "max_age_days"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0
            ):
                raise CacheBoundsError(
                    f"cache {name}: expected a positive number (or null for no bound), got {value!r}; "
                    f"e.g. {name}: {DEFAULT_MAX_GB if name == 'max_gb' else DEFAULT_MAX_AGE_DAYS:g}"
                )

    @property
    def max_bytes(self) -> int | None:
        return None if self.max_gb is None else int(self.max_gb * 1e9)

    @property
    def max_age_s(self) -> float | None:
        return None if self.max_age_days is None else self.max_age_days * 86_400.0


@dataclass(frozen=True)
class Item:
    kind: str  # "embedding" | "export"
    name: str
    size_bytes: int
    last_used: float
    remove: Callable[[], None] = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "size_bytes": self.size_bytes,
            "last_used": _iso(self.last_used),
        }


@dataclass(frozen=True)
class CacheInfo:
    root: Path
    items: tuple[Item, ...]

    def total(self, kind: str | None = None) -> tuple[int, int]:
        """(entries, bytes), of one kind or of all."""
        chosen = [item for item in self.items if kind is None or item.kind == kind]
        return len(chosen), sum(item.size_bytes for item in chosen)

    def to_dict(self) -> dict[str, Any]:
        used = [item.last_used for item in self.items]
        return {
            "root": str(self.root),
            "entries": self.total()[0],
            "bytes": self.total()[1],
            "embeddings": dict(zip(("entries", "bytes"), self.total("embedding"), strict=True)),
            "exports": dict(zip(("entries", "bytes"), self.total("export"), strict=True)),
            "least_recently_used": _iso(min(used)) if used else None,
            "most_recently_used": _iso(max(used)) if used else None,
        }


@dataclass
class PruneResult:
    root: Path
    bounds: CacheBounds
    dry_run: bool
    removed: list[tuple[Item, str]] = field(default_factory=list)  # (item, why: "age" | "size")
    kept: list[Item] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)  # temp files / partial folders of killed writers

    @property
    def removed_bytes(self) -> int:
        return sum(item.size_bytes for item, _ in self.removed)

    @property
    def kept_bytes(self) -> int:
        return sum(item.size_bytes for item in self.kept)

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        return (
            f"cache {self.root}: {verb} {len(self.removed)} entr{'y' if len(self.removed) == 1 else 'ies'} "
            f"({_mb(self.removed_bytes)}), kept {len(self.kept)} ({_mb(self.kept_bytes)}); bounds "
            f"{_bound(self.bounds.max_gb, 'GB')}, {_bound(self.bounds.max_age_days, 'days')} since last use"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "dry_run": self.dry_run,
            "bounds": {"max_gb": self.bounds.max_gb, "max_age_days": self.bounds.max_age_days},
            "removed": [{**item.to_dict(), "why": why} for item, why in self.removed],
            "removed_bytes": self.removed_bytes,
            "kept": len(self.kept),
            "kept_bytes": self.kept_bytes,
            "leftovers": self.leftovers,
        }


def cache_info(root: Path) -> CacheInfo:
    """What the cache folder holds; a folder that does not exist is an empty cache (nothing is created)."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise CacheBoundsError(f"cache folder {root} is a file, expected a folder (cache.dir / --dir)")
    return CacheInfo(root, tuple(_items(root)))


def prune_cache(
    root: Path, bounds: CacheBounds = CacheBounds(), keep_since: float | None = None, dry_run: bool = False
) -> PruneResult:
    """Remove entries unused for longer than `bounds.max_age_days`, then the least recently used until the total is
    within `bounds.max_gb`; never an entry used at or after `keep_since` (epoch seconds)."""
    info = cache_info(root)
    result = PruneResult(info.root, bounds, dry_run)
    now = time.time()
    remaining = sorted(info.items, key=lambda item: item.last_used)  # least recently used first

    def protected(item: Item) -> bool:
        return keep_since is not None and item.last_used >= keep_since

    if bounds.max_age_s is not None:
        expired = [i for i in remaining if now - i.last_used > bounds.max_age_s and not protected(i)]
        result.removed += [(item, "age") for item in expired]
        gone = {id(item) for item in expired}
        remaining = [item for item in remaining if id(item) not in gone]
    if bounds.max_bytes is not None:
        total = sum(item.size_bytes for item in remaining)
        kept = []
        for item in remaining:
            if total > bounds.max_bytes and not protected(item):
                result.removed.append((item, "size"))
                total -= item.size_bytes
            else:
                kept.append(item)
        remaining = kept
    result.kept = remaining
    result.leftovers = [str(path) for path in _leftovers(info.root)]
    if not dry_run:
        for item, _ in result.removed:
            item.remove()
        for path in map(Path, result.leftovers):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    return result


def mark_export_used(folder: Path) -> None:
    """Renew a cached export's last use (its folder's mtime); best effort, as for embeddings."""
    try:
        Path(folder).touch(exist_ok=True)
    except OSError:
        pass


def _items(root: Path) -> list[Item]:
    items = [
        Item("embedding", entry.key[:16], entry.size_bytes, entry.last_used, entry.remove)
        for entry in list_entries(root / EMBEDDINGS)
    ]
    exports = root / EXPORTS
    for folder in sorted(exports.iterdir()) if exports.is_dir() else []:
        if folder.name.startswith(".") or not folder.is_dir():
            continue  # a partial export of a running (or killed) export_run: see _leftovers
        try:
            size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
            last_used = folder.stat().st_mtime
        except FileNotFoundError:  # removed meanwhile
            continue
        items.append(Item("export", folder.name, size, last_used, _remover(folder)))
    return items


def _remover(folder: Path) -> Callable[[], None]:
    return lambda: shutil.rmtree(folder, ignore_errors=True)


def _leftovers(root: Path) -> list[Path]:
    cutoff = time.time() - LEFTOVER_AGE_S
    found = list(stale_temp_files(root / EMBEDDINGS, LEFTOVER_AGE_S)) if (root / EMBEDDINGS).is_dir() else []
    exports = root / EXPORTS
    for path in sorted(exports.glob(".*")) if exports.is_dir() else []:
        try:
            if path.stat().st_mtime < cutoff:
                found.append(path)
        except FileNotFoundError:
            continue
    return found


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _bound(value: float | None, unit: str) -> str:
    return "no limit" if value is None else f"{value:g} {unit}"
