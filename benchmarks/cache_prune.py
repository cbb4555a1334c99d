"""What bounding the embedding cache costs: `cache_info` and `prune_cache` over a cache of many entries.

    python benchmarks/cache_prune.py                  # 5000 entries of a SciFact-like shape scaled down
    python benchmarks/cache_prune.py --entries 20000

Pruning runs after every pipeline run, so its cost is a stat per file: this builds a throwaway cache of `--entries`
entries (64 x 384 float32 each, last uses spread over 60 days), then times info, a dry run, and the real prune to
half the size with a 30-day age bound. Prints the machine load beside the numbers.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import load_text, timed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=5000)
    args = parser.parse_args()

    import numpy as np

    from gates.cache_prune import CacheBounds, cache_info, prune_cache
    from training.embedding_cache import EmbeddingCache

    with tempfile.TemporaryDirectory() as scratch:
        cache = EmbeddingCache(Path(scratch) / "embeddings")
        vectors = np.ones((64, 384), dtype=np.float32)
        with timed() as took:
            for i in range(args.entries):
                cache.encode(
                    [str(i)] * 64, model=f"m{i}", backend="onnx-fp32", dim=384, encode=lambda _: vectors
                )
        print(f"built {args.entries} entries in {took.seconds:.1f} s ({load_text()})")
        for path in Path(scratch, "embeddings").glob("??/*.npy"):
            stamp = time.time() - (int(path.stem[:8], 16) % 60) * 86_400
            os.utime(path, (stamp, stamp))

        with timed() as took:
            info = cache_info(Path(scratch))
        print(
            f"cache_info: {len(info.items)} entries, {info.total()[1] / 1e6:.0f} MB in {took.seconds * 1e3:.0f} ms"
        )
        bounds = CacheBounds(max_gb=info.total()[1] / 2e9, max_age_days=30)
        with timed() as took:
            dry = prune_cache(Path(scratch), bounds, dry_run=True)
        print(f"dry run: would remove {len(dry.removed)} in {took.seconds * 1e3:.0f} ms")
        with timed() as took:
            done = prune_cache(Path(scratch), bounds)
        print(
            f"prune: removed {len(done.removed)} ({done.removed_bytes / 1e6:.0f} MB), kept {len(done.kept)} in "
            f"{took.seconds * 1e3:.0f} ms ({load_text()})"
        )


if __name__ == "__main__":
    main()
