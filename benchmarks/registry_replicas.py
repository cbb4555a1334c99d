"""Serving throughput with 1 vs 3 `embedgate serve` replicas on one S3 registry, and what each replica costs.

    make s3-test-server && nice -n 19 python benchmarks/registry_replicas.py --seconds 20

The registry is on moto's S3 server (tests/service/s3_server.py, 127.0.0.1); the model is all-MiniLM-L6-v2 exported
once (benchmarks/serve_throughput.py's `prepare`, reused from --workdir) and served at 128 dims, fp32. Each
replica is a full `embedgate serve` (launcher, BentoML arbiter, one worker) with its own verified cache and
`--threads` onnxruntime threads. Load: wrk, one short sentence per request, --connections in all, split evenly
over the replicas (what a load balancer does), --seconds per configuration after --warmup. Printed: sentences/s
summed over the replicas, failed requests, and each replica's resident memory (RSS of its whole process tree,
after the load), with the load average before and after. On a machine with fewer cores than replicas x threads
expect no gain from more replicas: they share the same cores, and each costs its own model copy in memory.

    python benchmarks/registry_replicas.py --swap --replicas 3 --before-code DIR

--swap measures instead how long a promotion takes to reach every replica: the replicas serve the champion under
the same wrk load, the same export is promoted again (a new version: new objects, so every replica downloads it), and
the lag of each replica is the time from `promote` returning until its /info serves the new version (polled
every 0.1 s). Printed with the promotion's own time and the bytes of the new version in each replica's cache
(what it downloaded to swap). --before-code runs the replicas from another checkout (e.g. `git archive` of
an older commit into DIR) first, so both are measured in one run on the same machine and registry.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))
sys.path.insert(0, str(BENCH_DIR))

from serve_throughput import SERVING_DIM, prepare  # noqa: E402

from benchmarks.harness import Served, load_text, moto_s3, served  # noqa: E402

LUA = (
    'wrk.method = "POST"\n'
    'wrk.headers["Content-Type"] = "application/json"\n'
    f'wrk.body = \'{{"input": ["can my landlord keep the deposit after the lease ends"], '
    f'"dimensions": {SERVING_DIM}}}\'\n'
)


def rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants, MiB."""
    import psutil

    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total / 2**20


def wrk_many(urls: list[str], connections: int, seconds: float, script: Path) -> tuple[float, int]:
    """One wrk per replica, at once; (requests/s summed, failed requests)."""
    per = max(1, connections // len(urls))
    procs = [
        subprocess.Popen(
            ["wrk", "-t1", f"-c{per}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script), url],
            stdout=subprocess.PIPE,
            text=True,
        )
        for url in urls
    ]
    rate, failed = 0.0, 0
    for proc in procs:
        out = proc.communicate()[0]
        match = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if not match:
            raise SystemExit(f"wrk printed no rate:\n{out}")
        rate += float(match[1])
        bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        errors = re.search(r"Socket errors:.*?(\d+).*?(\d+).*?(\d+).*?(\d+)", out)
        failed += (int(bad[1]) if bad else 0) + (sum(int(x) for x in errors.groups()) if errors else 0)
    return rate, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", default="1,3", help="replica counts to measure, comma-separated")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads per replica")
    parser.add_argument("--connections", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument(
        "--poll-interval", type=float, default=0.5, help="EMBEDGATE_POLL_INTERVAL_S of the replicas"
    )
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "embedgate-serve-bench")
    parser.add_argument(
        "--swap", action="store_true", help="measure the promotion-to-replica swap lag instead"
    )
    parser.add_argument(
        "--before-code", type=Path, help="with --swap: also run the replicas from this checkout"
    )
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    _, local_registry = prepare(args.workdir)
    with moto_s3() as s3_env, tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        os.environ.update({**s3_env, "EMBEDGATE_REGISTRY_CACHE": str(tmp_path / "promoter-cache")})
        from service.registry.registry import Registry

        url = "s3://bench/registry"
        Registry(url).add_version(
            {"onnx": Path(local_registry) / "versions" / "v0001" / "onnx"},
            metadata={"serving_dim": SERVING_DIM, "serve_precision": "fp32"},
            who="benchmark",
            reason="registry_replicas",
        )
        script = tmp_path / "post.lua"
        script.write_text(LUA)
        print(
            f"MiniLM fp32 at {SERVING_DIM} dims from {url} (moto); {args.threads} thread(s) per replica; "
            f"{args.connections} connections in all; {os.cpu_count()} CPUs; {load_text()}",
            flush=True,
        )
        for count in [int(n) for n in args.replicas.split(",")]:
            if not args.swap:
                measure(count, url, s3_env, script, tmp_path, args)
                continue
            codes = [("before", args.before_code)] if args.before_code else []
            for label, code in [*codes, ("after", BENCH_DIR.parent)]:
                export = Path(local_registry) / "versions" / "v0001" / "onnx"
                measure_swap(count, url, s3_env, script, tmp_path, args, label, code.resolve(), export)


def start_replicas(
    stack: contextlib.ExitStack,
    count: int,
    url: str,
    s3_env: dict,
    tmp_path: Path,
    args,
    label: str,
    code: Path,
) -> list[Served]:
    """`count` replicas running the code in `code`, each with its own empty cache, ready to answer."""
    servers = []
    for i in range(count):
        env = {
            **s3_env,
            "EMBEDGATE_REGISTRY_CACHE": str(tmp_path / f"cache-{label}-{count}-{i}"),
            "EMBEDGATE_DRIFT_SAMPLE_RATE": "0",
            "EMBEDGATE_POLL_INTERVAL_S": str(args.poll_interval),
            "PYTHONPATH": str(code),
        }
        argv = lambda port: [  # noqa: E731
            sys.executable, "-m", "gates.cli", "serve", "--registry", url, "--port", str(port),
            "--threads", str(args.threads),
        ]  # fmt: skip
        log = tmp_path / f"replica-{label}-{count}-{i}.log"
        servers.append(stack.enter_context(served(argv, env=env, log_path=log, cwd=code, wait=False)))
    for server in servers:  # started together, then each waited for
        server.wait_ready("/ready", timeout_s=600)
    return servers


def measure(count: int, url: str, s3_env: dict, script: Path, tmp_path: Path, args) -> None:
    with contextlib.ExitStack() as stack:
        servers = start_replicas(stack, count, url, s3_env, tmp_path, args, "rate", BENCH_DIR.parent)
        urls = [f"{server.url}/v1/embeddings" for server in servers]
        wrk_many(urls, args.connections, args.warmup, script)
        load_before = os.getloadavg()[0]
        rate, failed = wrk_many(urls, args.connections, args.seconds, script)
        rss = [rss_mib(server.process.pid) for server in servers]
        print(
            f"{count} replica(s): {rate:7.1f} sentences/s, {failed} failed; RSS per replica "
            f"{', '.join(f'{r:.0f}' for r in rss)} MiB (total {sum(rss):.0f} MiB); load "
            f"{load_before:.1f} -> {os.getloadavg()[0]:.1f}",
            flush=True,
        )


def serving_version(server: Served) -> str | None:
    import httpx

    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
        info = httpx.get(f"{server.url}/info", timeout=5).json()
        return info["replica"]["serving_version"]
    return None


def cache_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def measure_swap(
    count: int,
    url: str,
    s3_env: dict,
    script: Path,
    tmp_path: Path,
    args,
    label: str,
    code: Path,
    export: Path,
) -> None:
    """Under load, promote the export again and time how long each replica takes to serve the new version."""
    from service.registry.registry import Registry

    registry = Registry(url)
    with contextlib.ExitStack() as stack:
        servers = start_replicas(stack, count, url, s3_env, tmp_path, args, label, code)
        old = {serving_version(server) for server in servers}
        per = max(1, args.connections // count)
        load = [
            subprocess.Popen(
                ["wrk", "-t1", f"-c{per}", "-d600s", "-s", str(script), f"{server.url}/v1/embeddings"],
                stdout=subprocess.DEVNULL,
            )
            for server in servers
        ]
        try:
            time.sleep(args.warmup)
            load_before = os.getloadavg()[0]
            started = time.monotonic()
            version = registry.add_version(
                {"onnx": export},
                metadata={"serving_dim": SERVING_DIM, "serve_precision": "fp32"},
                who="benchmark",
                reason=f"registry_replicas --swap ({label})",
                run_id=f"swap-{label}-{time.time_ns()}",
            )
            promoted = time.monotonic()
            lags: dict[int, float] = {}
            while len(lags) < count and time.monotonic() - promoted < 300:
                for i, server in enumerate(servers):
                    if i not in lags and serving_version(server) == version:
                        lags[i] = time.monotonic() - promoted
                time.sleep(0.1)
        finally:
            for proc in load:
                proc.terminate()
                proc.wait(timeout=10)
        sizes = [
            sum(
                cache_bytes(path)
                for path in (tmp_path / f"cache-{label}-{count}-{i}").glob(f"*/versions/{version}")
            )
            for i in range(count)
        ]
        print(
            f"{label}: {count} replica(s) on {sorted(v for v in old if v)} -> {version}: promote "
            f"{promoted - started:.1f} s; lag per replica "
            f"{', '.join(f'{lags[i]:.1f}' if i in lags else 'none in 300' for i in range(count))} s "
            f"(max {max(lags.values(), default=float('nan')):.1f}); {version} in each replica's cache "
            f"{', '.join(f'{b / 1e6:.0f}' for b in sizes)} MB; load {load_before:.1f} -> {os.getloadavg()[0]:.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
