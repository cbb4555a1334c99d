"""Where a served request's CPU goes: py-spy samples the service's worker while wrk loads it; writes a flame graph
(SVG) and a summary of the busiest functions, inclusive and self, idle waits left out.

    python benchmarks/profile_serve.py --out benchmarks/results/serve_profile_after      # ~1 min
    python benchmarks/profile_serve.py --connections 1 --seconds 20 --out /tmp/c1

Serves the registry that benchmarks/serve_throughput.py prepares (MiniLM at 128 dims; run that once first, or
pass --registry), fp32, 2 threads, drift capture off; one short sentence per request. Needs wrk
(`apt-get install -y wrk`) and py-spy (in the dev extra); py-spy attaches to a child process, which root (or
ptrace permission) allows.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

from serve_throughput import (  # noqa: E402
    API_KEY,
    WRK_SCRIPT,
    Server,
    _wrk_env,
    per_request_cpu,
    service_argv,
    worker_thread_cpu,
)

# Frames where a thread waits for work (executor queues, the event loop's poll): not CPU spent on a request.
IDLE_FRAMES = (
    "thread.py:81)",
    "runners.py:118)",
    "threading.py:327)",
    "threading.py:331)",
    "queue.py:171)",
    "queue.py:180)",
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="path prefix: writes OUT.svg and OUT.txt")
    parser.add_argument(
        "--registry", type=Path, default=REPO_ROOT / "artifacts" / "bench" / "serve-throughput" / "registry"
    )
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--port", type=int, default=3967)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second (default 250)")
    args = parser.parse_args()
    if not (args.registry / "champion.json").is_file():
        parser.error(
            f"{args.registry} holds no champion: run benchmarks/serve_throughput.py once, or pass --registry"
        )
    work = args.out.parent
    work.mkdir(parents=True, exist_ok=True)
    bodies = work / ".profile_bodies.jsonl"
    script = work / ".profile_bodies.lua"
    bodies.write_text(
        '{"input": ["The quick brown fox jumps over the lazy dog near the river bank."], "dimensions": 128}\n'
    )
    script.write_text(WRK_SCRIPT)
    env = {
        **os.environ,
        "BENTOML_DO_NOT_TRACK": "true",
        "TOKENIZERS_PARALLELISM": "false",
        "EMBEDGATE_DRIFT_SAMPLE_RATE": "0",
        "EMBEDGATE_REGISTRY": str(args.registry),
        "EMBEDGATE_THREADS": "2",
        "EMBEDGATE_API_KEY": API_KEY,
        "PYTHONPATH": str(REPO_ROOT),
    }
    argv = service_argv(args.port)
    raw = args.out.with_suffix(".raw")
    try:
        with Server(
            "ours", argv, env, args.port, Path(tempfile.gettempdir()) / "profile_serve.log"
        ) as server:
            server.wait_ready()
            worker = _worker_pid(server.process.pid)
            load = subprocess.Popen(
                [
                    "wrk",
                    "-t",
                    "2",
                    "-c",
                    str(args.connections),
                    "-d",
                    f"{round(args.seconds) + 4}s",
                    "-s",
                    str(script),
                    server.url,
                ],
                env=_wrk_env(bodies),
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(2)
            spent: dict = {}
            for output, fmt in ((raw, "raw"), (args.out.with_suffix(".svg"), "flamegraph")):
                before, started = worker_thread_cpu(server.process.pid), _requests_answered(server)
                subprocess.run(
                    [
                        _py_spy(),
                        "record",
                        "-p",
                        str(worker),
                        "-d",
                        str(int(args.seconds / 2)),
                        "-r",
                        str(args.rate),
                        "--threads",
                        "-f",
                        fmt,
                        "-o",
                        str(output),
                    ],
                    check=True,
                    capture_output=True,
                )
                if fmt == "raw":  # the event loop's CPU per request over the sampled window: samples -> µs
                    answered = _requests_answered(server) - started
                    spent = per_request_cpu(before, worker_thread_cpu(server.process.pid), answered)
            wrk_out = load.communicate()[0]
        summary = summarize(raw.read_text().splitlines(), loop_ms=spent.get("loop_cpu_ms_per_request"))
        rate = next((line.strip() for line in wrk_out.splitlines() if line.startswith("RESULT")), "")
        text = (
            f"py-spy, {args.connections} wrk connections, one short sentence per request; load "
            f"{os.getloadavg()[0]:.1f}\n{rate}\nCPU ms per request: "
            + ", ".join(f"{key} {value:.3f}" for key, value in spent.items())
            + f"\n{summary}"
        )
        args.out.with_suffix(".txt").write_text(text)
        print(text)
    finally:
        raw.unlink(missing_ok=True)
        for path in (bodies, script):
            path.unlink(missing_ok=True)


def _py_spy() -> str:
    """py-spy from PATH, else beside this interpreter (the venv's bin, not always on PATH)."""
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit("py-spy is not installed: pip install py-spy==0.4.3 (it is in the dev extra)")
    return found


def _worker_pid(parent: int) -> int:
    """BentoML's worker process (the one serving requests) under the `bentoml serve` process."""
    out = subprocess.run(
        ["pgrep", "-P", str(parent), "-f", "_bentoml_impl.worker.service"], capture_output=True, text=True
    ).stdout.split()
    if not out:
        raise SystemExit(f"no BentoML worker under pid {parent}")
    return int(out[0])


def summarize(lines: list[str], top: int = 40, loop_ms: float | None = None) -> str:
    """Share of busy samples per function, inclusive and self, from py-spy's raw (collapsed-stack) output; then the
    event loop's thread (MainThread) alone, in µs per request when `loop_ms` (its CPU ms per request) is known."""
    every = _shares(lines, top)
    main = _shares([line for line in lines if "MainThread" in line.partition(";")[0]], top, loop_ms)
    return f"all threads: {every}\nevent loop (MainThread) only: {main}"


def _shares(lines: list[str], top: int, loop_ms: float | None = None) -> str:
    inclusive: collections.Counter = collections.Counter()
    own: collections.Counter = collections.Counter()
    busy = idle = 0
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")[1:]  # the first is the thread
        if not frames or frames[-1].endswith(IDLE_FRAMES):
            idle += count
            continue
        busy += count
        for name in {_short(frame) for frame in frames}:  # a function seen at two lines counts once
            inclusive[name] += count
        own[_short(frames[-1])] += count
    if busy == 0:
        return "no busy samples"

    def cell(n: int) -> str:
        share = f"{100 * n / busy:5.1f}%"
        return share if loop_ms is None else f"{share} {1000 * loop_ms * n / busy:6.0f} µs/request"

    rows = [f"busy samples {busy}, idle {idle}", "inclusive:"]
    rows += [f"  {cell(n)}  {name}" for name, n in inclusive.most_common(top)]
    rows += ["self:"] + [f"  {cell(n)}  {name}" for name, n in own.most_common(top // 2)]
    return "\n".join(rows)


def _requests_answered(server: Server) -> int:
    """The service's count of answered embedding requests (its /metrics), to turn CPU into CPU per request."""
    import httpx

    text = httpx.get(server.url.rsplit("/v1/", 1)[0] + "/metrics", headers=_auth(), timeout=10).text
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("embedgate_requests_total{") and 'route="/v1/embeddings"' in line
        )
    )


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


def _short(frame: str) -> str:
    """`function (file.py)`: one row per function, its lines summed (py-spy names the line of each sample)."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1].split(':')[0]})" if where else name


if __name__ == "__main__":
    main()
