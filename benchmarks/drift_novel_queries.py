"""Issue 28: is the novel-query list of a flagged window the traffic that moved? On a real pipeline run (the demo
champion), 20% of another domain is mixed into held-out legal queries, served through the real capture (texts
kept), judged by `run_drift`; per window: the verdict, the novel rows, and the share of the list's 20 most novel
rows that are other-domain texts (top-20 purity). Same-distribution windows are judged too (the list should hold
about the 1% the cutoff lets through, and the alarm stays off).

    embedgate demo --out artifacts/demo
    python benchmarks/drift_novel_queries.py artifacts/demo/runs/<run_id> --datasets DIR --windows 8

The reference is rebuilt by `build_reference` from `pipeline_reference_texts(run config)`: the same texts, dim and
calibration as the run's stored reference, now with the query texts the list shows beside each novel group. The
in-domain stream is held-out queries (never trained on), drawn with replacement: with --cross-fit (default) half of
them, the reference holding only the other half, so the stream is also new to the reference (as in
drift_detection.py); with --no-cross-fit all of them, which the reference holds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from drift_detection import other_domains  # noqa: E402

REQUEST = 10


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, nargs="?", help="a pipeline run (its onnx/ and config.yaml)")
    parser.add_argument("--onnx", type=Path, help="an ONNX export instead of RUN/onnx")
    parser.add_argument("--config", type=Path, help="a pipeline config instead of RUN/config.yaml")
    parser.add_argument("--datasets", type=Path, required=True)
    parser.add_argument("--window-rows", type=int, default=200)
    parser.add_argument("--windows", type=int, default=8, help="mixed windows per other domain")
    parser.add_argument("--same-windows", type=int, default=8)
    parser.add_argument("--share", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--cross-fit", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()

    from gates.pipeline.config import load_pipeline_config
    from gates.pipeline.drift_texts import pipeline_reference_texts
    from service.drift.capture import DriftCapture
    from service.drift.descriptors import DESCRIPTOR_NAMES
    from service.drift.novelty import NovelQueries
    from service.drift.reference_builder import build_reference
    from service.drift.runner import run_drift
    from service.drift.settings import DriftSettings
    from service.drift.windows import list_windows, read_window
    from service.model.embedder import OnnxEmbedder
    from service.registry.registry import Registry

    onnx = args.onnx or args.run / "onnx"
    config = load_pipeline_config(args.config or args.run / "config.yaml")
    texts = pipeline_reference_texts(config)
    dims = json.loads((onnx / "embedder.json").read_text())["dims"]
    dim = min(dims)
    scratch = Path(tempfile.mkdtemp(prefix="novel-queries-"))
    started = time.perf_counter()
    held_out = list(texts.held_out_queries)
    # --cross-fit: half the held-out queries in the reference, the other half (never in it) as the in-domain
    # stream; else the stream is queries the reference holds (their nearest reference query is themselves)
    in_reference, normal = (held_out[::2], held_out[1::2]) if args.cross_fit else (held_out, held_out)
    build_reference(
        onnx,
        texts.queries,
        texts.corpus_sample,
        scratch / "reference",
        dim=dim,
        held_out_queries=in_reference,
        window_rows=args.window_rows,
    )
    registry = Registry(scratch / "registry")
    registry.add_version({"reference": scratch / "reference"}, metadata={})
    embedder = OnnxEmbedder.from_export_dir(onnx)
    rng = random.Random(args.seed)
    domains = {k: v for k, v in other_domains(args.datasets).items() if k != "junk"}
    streams: list[tuple[str, list[str], set[str]]] = [
        ("same", [rng.choice(normal) for _ in range(args.window_rows)], set())
        for _ in range(args.same_windows)
    ]
    for name, other in domains.items():
        pool = [t for t in other if t not in set(normal)]
        for _ in range(args.windows):
            rows = [
                rng.choice(pool) if rng.random() < args.share else rng.choice(normal)
                for _ in range(args.window_rows)
            ]
            streams.append((name, rows, set(pool)))
    report = {
        "run": str(args.run),
        "onnx": str(onnx),
        "dim": dim,
        "window_rows": args.window_rows,
        "share": args.share,
        "cross_fit": args.cross_fit,
        "windows": [],
    }
    for index, (name, rows, other) in enumerate(streams):
        settings = DriftSettings(
            dir=scratch / f"drift-{index}", sample_rate=1.0, window_rows=args.window_rows
        )
        capture = DriftCapture(settings, seed=index)
        for start in range(0, len(rows), REQUEST):
            batch = rows[start : start + REQUEST]
            vectors = embedder.embed(batch, dimensions=max(dims))
            capture.record(
                batch, vectors, embedder.count_tokens(batch), [False] * len(batch), "v0001", max(dims)
            )
            capture.wait_idle(30)
        capture.close()
        (verdict,) = run_drift(settings, registry.root, write_snapshots=False).computed
        window = read_window(list_windows(settings.windows_dir)[0], DESCRIPTOR_NAMES)
        found = NovelQueries.from_dict(verdict.novel)
        top = [window.texts[row] for row in found.ranked_row_ids()[:20]]
        entry = {
            "stream": name,
            "drifted": verdict.drifted,
            "novelty": verdict.signal("novelty").score,
            "novelty_threshold": verdict.signal("novelty").threshold,
            "novel_rows": found.novel_rows,
            "novel_groups": found.novel_groups,
            "other_rows": sum(t in other for t in rows),
            "top": len(top),
            "top_other": sum(t in other for t in top),
            "purity": round(sum(t in other for t in top) / len(top), 3) if top else None,
            "example_groups": [
                {
                    "rows": g.rows,
                    "examples": list(g.examples[:1]),
                    "nearest_reference": g.nearest_reference_query,
                }
                for g in found.groups[:3]
            ],
        }
        report["windows"].append(entry)
        print(
            f"{name:<8} drifted={entry['drifted']!s:<5} novel {entry['novel_rows']:>3} rows/{entry['novel_groups']:>3} "
            f"groups, other-domain rows {entry['other_rows']:>3}, top-{entry['top']} purity {entry['purity']}",
            flush=True,
        )
    summary = {}
    for name in ["same", *domains]:
        entries = [w for w in report["windows"] if w["stream"] == name]
        flagged = [w for w in entries if w["drifted"]]
        purities = [w["purity"] for w in flagged if w["purity"] is not None]
        summary[name] = {
            "windows": len(entries),
            "flagged": len(flagged),
            "novel_rows_mean": round(sum(w["novel_rows"] for w in entries) / len(entries), 1),
            "purity_min_flagged": min(purities) if purities else None,
            "purity_mean_flagged": round(sum(purities) / len(purities), 3) if purities else None,
        }
    report["summary"] = summary
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["load"] = os.getloadavg()
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
