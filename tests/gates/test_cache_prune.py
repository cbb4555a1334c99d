"""Cache bounds: least recently used go first, a hit renews an entry, what a run used is never pruned by it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from gates.cache_prune import CacheBounds, CacheBoundsError, cache_info, prune_cache
from gates.cli import main
from training.embedding_cache import EmbeddingCache

DAY = 86_400.0


def _encoder(texts):
    return np.ones((len(texts), 4), dtype=np.float32)


def _entry(cache: EmbeddingCache, name: str, age_s: float, rows: int = 8) -> Path:
    """Store one entry for model `name` and date its last use `age_s` ago; returns its .npy."""
    cache.encode(
        [f"{name} {i}" for i in range(rows)], model=name, backend="onnx-fp32", dim=4, encode=_encoder
    )
    key = EmbeddingCache.key(name, "onnx-fp32", 4, [f"{name} {i}" for i in range(rows)])
    npy = cache.folder / key[:2] / f"{key}.npy"
    stamp = time.time() - age_s
    os.utime(npy, (stamp, stamp))
    return npy


def _export(root: Path, name: str, age_s: float, size: int = 1000) -> Path:
    folder = root / "exports" / name
    (folder / "d4").mkdir(parents=True)
    (folder / "d4" / "model.onnx").write_bytes(b"x" * size)
    (folder / "embedder.json").write_text("{}")
    stamp = time.time() - age_s
    os.utime(folder, (stamp, stamp))
    return folder


@pytest.fixture()
def cache_root(tmp_path) -> Path:
    return tmp_path / "cache"


def test_size_bound_removes_least_recently_used_first(cache_root):
    cache = EmbeddingCache(cache_root / "embeddings")
    old, middle, new = (
        _entry(cache, name, age) for name, age in (("old", 3 * DAY), ("mid", 2 * DAY), ("new", DAY))
    )
    one = cache_info(cache_root).items[0].size_bytes
    result = prune_cache(cache_root, CacheBounds(max_gb=2.5 * one / 1e9, max_age_days=None))
    assert [why for _, why in result.removed] == ["size"]
    assert not old.exists() and not old.with_suffix(".json").exists()
    assert middle.exists() and new.exists()
    assert result.kept_bytes <= 2.5 * one and len(result.kept) == 2


def test_a_hit_renews_an_entry_so_it_outlives_newer_unused_ones(cache_root):
    cache = EmbeddingCache(cache_root / "embeddings")
    champion = _entry(cache, "champion", 5 * DAY)
    other = _entry(cache, "other", DAY)
    calls = []
    again = cache.encode(
        [f"champion {i}" for i in range(8)],
        model="champion",
        backend="onnx-fp32",
        dim=4,
        encode=lambda texts: calls.append(texts) or _encoder(texts),
    )
    assert calls == [] and again.shape == (8, 4)  # a hit
    assert time.time() - champion.stat().st_mtime < 60  # its last use is now
    one = cache_info(cache_root).items[0].size_bytes
    prune_cache(cache_root, CacheBounds(max_gb=1.5 * one / 1e9, max_age_days=None))
    assert champion.exists() and not other.exists()


def test_age_bound_and_exports_and_killed_writers_leftovers(cache_root):
    cache = EmbeddingCache(cache_root / "embeddings")
    stale, fresh = _entry(cache, "stale", 40 * DAY), _entry(cache, "fresh", DAY)
    old_export, new_export = (
        _export(cache_root, "base-old", 45 * DAY),
        _export(cache_root, "base-new", 2 * DAY),
    )
    leftover = stale.with_name(".abc.123.tmp.npy")
    leftover.write_bytes(b"half")
    os.utime(leftover, (time.time() - 2 * DAY,) * 2)
    partial = cache_root / "exports" / ".base.partial-xyz"
    partial.mkdir()
    os.utime(partial, (time.time() - 2 * DAY,) * 2)
    live = cache_root / "exports" / ".base.partial-live"  # a write in progress right now: left alone
    live.mkdir()

    result = prune_cache(cache_root, CacheBounds(max_gb=None, max_age_days=30))
    assert sorted((item.kind, why) for item, why in result.removed) == [
        ("embedding", "age"),
        ("export", "age"),
    ]
    assert not stale.exists() and fresh.exists()
    assert not old_export.exists() and new_export.exists()
    assert not leftover.exists() and not partial.exists() and live.exists()
    info = cache_info(cache_root).to_dict()
    assert info["embeddings"]["entries"] == 1 and info["exports"]["entries"] == 1


def test_what_the_current_run_used_is_kept_even_over_the_bound(cache_root):
    cache = EmbeddingCache(cache_root / "embeddings")
    before = _entry(cache, "before", DAY)
    run_started = time.time() - 1
    used_now = _entry(cache, "used-now", 0)
    result = prune_cache(cache_root, CacheBounds(max_gb=1e-9, max_age_days=None), keep_since=run_started)
    assert not before.exists() and used_now.exists()
    assert [item.name for item in result.kept] == [used_now.stem[:16]]


def test_dry_run_removes_nothing(cache_root):
    cache = EmbeddingCache(cache_root / "embeddings")
    entry = _entry(cache, "old", 90 * DAY)
    result = prune_cache(cache_root, CacheBounds(), dry_run=True)
    assert len(result.removed) == 1 and entry.exists()
    assert "would remove 1 entry" in result.summary()


def test_a_pruned_entry_is_simply_encoded_again(cache_root):
    cache = EmbeddingCache(cache_root / "embeddings")
    _entry(cache, "m", 90 * DAY)
    prune_cache(cache_root, CacheBounds(max_age_days=30))
    calls = []
    cache.encode(
        [f"m {i}" for i in range(8)],
        model="m",
        backend="onnx-fp32",
        dim=4,
        encode=lambda texts: calls.append(len(texts)) or _encoder(texts),
    )
    assert calls == [8]


@pytest.mark.parametrize(
    "bounds", [{"max_gb": 0}, {"max_gb": -1.0}, {"max_age_days": "30"}, {"max_age_days": True}]
)
def test_bad_bounds_are_refused_with_the_fix(bounds):
    with pytest.raises(CacheBoundsError, match=r"expected a positive number \(or null for no bound\), got"):
        CacheBounds(**bounds)


def test_a_file_where_the_cache_folder_should_be_is_an_error(tmp_path):
    (tmp_path / "cache").write_text("x")
    with pytest.raises(CacheBoundsError, match="is a file, expected a folder"):
        cache_info(tmp_path / "cache")


def test_cache_info_and_prune_commands(cache_root, capsys):
    cache = EmbeddingCache(cache_root / "embeddings")
    old, new = _entry(cache, "old", 60 * DAY), _entry(cache, "new", DAY)
    _export(cache_root, "base", DAY)

    assert main(["cache", "info", "--dir", str(cache_root)]) == 0
    shown = capsys.readouterr().out
    assert f"cache {cache_root}: 3 entries" in shown and "embeddings: 2" in shown and "exports: 1" in shown

    assert main(["cache", "prune", "--dir", str(cache_root), "--dry-run"]) == 0
    shown = capsys.readouterr().out
    assert "would remove 1 entry" in shown and ", age)" in shown and old.exists()

    assert main(["cache", "prune", "--dir", str(cache_root), "--json"]) == 0
    pruned = json.loads(capsys.readouterr().out)
    assert [entry["why"] for entry in pruned["removed"]] == ["age"] and pruned["kept"] == 2
    assert not old.exists() and new.exists()

    assert main(["cache", "info", "--dir", str(cache_root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == 2


def test_cache_commands_on_a_missing_folder_and_bad_bounds(tmp_path, capsys):
    assert main(["cache", "info", "--dir", str(tmp_path / "none")]) == 0
    assert "empty" in capsys.readouterr().out and not (tmp_path / "none").exists()
    assert main(["cache", "prune", "--dir", str(tmp_path / "none")]) == 0
    assert "nothing to prune" in capsys.readouterr().out
    assert main(["cache", "prune", "--dir", str(tmp_path), "--max-gb", "-1"]) == 2
    assert "cache max_gb: expected a positive number" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["info", "prune"])
def test_cache_help_shows_the_examples(command, monkeypatch, capsys):
    from gates.commands.cache import INFO_HELP, PRUNE_HELP

    monkeypatch.setenv("COLUMNS", "250")
    assert main(["cache", command, "--help"]) == 0
    shown = [line.strip() for line in capsys.readouterr().out.splitlines()]
    examples = [
        line.strip()
        for line in (INFO_HELP if command == "info" else PRUNE_HELP).splitlines()
        if line.strip().startswith("embedgate ")
    ]
    assert examples and all(example in shown for example in examples)


def test_pipeline_config_cache_bounds(tmp_path):
    from gates.pipeline.config import load_pipeline_config
    from training.errors import ConfigError

    loaded = load_pipeline_config(None, {"data.path": "x"})
    assert (loaded.cache.max_gb, loaded.cache.max_age_days) == (2.0, 30.0)
    loaded = load_pipeline_config(None, {"data.path": "x", "cache.max_gb": None, "cache.max_age_days": 7})
    assert (loaded.cache.max_gb, loaded.cache.max_age_days) == (None, 7)
    with pytest.raises(ConfigError, match="max_gb"):
        load_pipeline_config(None, {"data.path": "x", "cache.max_gb": 0})


def test_every_pipeline_run_prunes_the_cache_and_records_it(tmp_path):
    # A run that stops at its first stage still bounds the cache (the pruning is in the run's finally).
    from gates.pipeline.config import load_pipeline_config
    from gates.pipeline.run import run_pipeline

    cache = EmbeddingCache(tmp_path / "cache" / "embeddings")
    stale, recent = _entry(cache, "stale", 40 * DAY), _entry(cache, "recent", DAY)
    config = load_pipeline_config(
        None,
        {"data.path": str(tmp_path / "missing.csv"), "output_dir": str(tmp_path / "runs"), "run_id": "r1"},
    )
    outcome = run_pipeline(config)
    assert outcome.status == "error"
    assert not stale.exists() and recent.exists()
    recorded = json.loads((tmp_path / "runs" / "r1" / "pipeline.json").read_text())["cache_prune"]
    assert [entry["why"] for entry in recorded["removed"]] == ["age"] and recorded["kept"] == 1
