"""Two pipeline runs on the same data, one cache: what the second run no longer computes.

    python benchmarks/pipeline_cache.py [--config gates/demo.yaml] [--out /tmp/pipeline-cache] [--set epochs=2]

Run 1 starts from an empty cache; run 2 is the same config again (its baseline is run 1's model when run 1 was
promoted, else the base model: either way encoded in run 1). Then run 2's evaluation is repeated the way it ran
before the cache (torch reference backend on, no cache: three candidate encodings, the baseline encoded and the
base model exported again) so the evaluation stage can be compared in the same session. Prints every stage's
seconds for both runs, the cache hits, the ratios, and the machine load (1-minute load average before and after):
on a shared machine compare ratios, not absolute seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("gates/demo.yaml"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/embedgate-pipeline-cache"))
    parser.add_argument("--set", dest="sets", action="append", default=[])
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from gates.commands.train import parse_set
    from gates.evaluation.evaluate import run_evaluation
    from gates.pipeline.config import load_pipeline_config
    from gates.pipeline.run import run_pipeline
    from training.run_dir import RunPaths

    shutil.rmtree(args.out, ignore_errors=True)
    overrides = {
        "output_dir": str(args.out / "runs"),
        "promotion.registry": str(args.out / "registry"),
        **parse_set(args.sets),
    }
    loads, stages, caches = [os.getloadavg()[0]], {}, {}
    for name in ("run1", "run2"):
        config = load_pipeline_config(args.config, {**overrides, "run_id": name})
        started = time.perf_counter()
        outcome = run_pipeline(config, progress=lambda line: print(line, flush=True))
        stages[name] = {s.name: s.seconds for s in outcome.stages} | {"total": time.perf_counter() - started}
        caches[name] = json.loads((outcome.run_dir / "eval" / "cache.json").read_text())
        summary = json.loads((outcome.run_dir / "train" / "summary.json").read_text())
        print(f"{name} mining cache: {(summary.get('mining') or {}).get('embedding_cache')}", flush=True)
        print(f"{name}: {outcome.status}: {outcome.reason}", flush=True)
        loads.append(os.getloadavg()[0])
    run2 = RunPaths(args.out / "runs" / "run2")
    legacy = args.out / "legacy-eval"
    shutil.copytree(
        run2.root, legacy, ignore=shutil.ignore_patterns("eval", "gate", "baseline", "report.html")
    )
    config = load_pipeline_config(args.config, overrides)
    started = time.perf_counter()
    run_evaluation(
        RunPaths(legacy),
        config.evaluation_data(),
        config.evaluation.split,
        registry_root=args.out / "registry",
        base_model=config.train.base_model,
        backends=("onnx-fp32", "onnx-int8", "torch"),
        quiet=True,
    )
    stages["before"] = {"evaluate": time.perf_counter() - started}
    loads.append(os.getloadavg()[0])

    print("\n| stage | run 1 (cold cache) s | run 2 (warm cache) s | run 2 / run 1 |")
    print("|---|---:|---:|---:|")
    for stage in stages["run1"]:
        a, b = stages["run1"][stage], stages["run2"].get(stage)
        print(f"| {stage} | {a:.1f} | {b:.1f} | {b / a:.2f} |" if b else f"| {stage} | {a:.1f} | - | - |")
    before, after = stages["before"]["evaluate"], stages["run2"]["evaluate"]
    print(
        f"\nevaluation of run 2 as before the cache (torch backend, no cache): {before:.1f} s; with the cache and "
        f"the default backends: {after:.1f} s ({after / before:.2f}x)"
    )
    for name, cache in caches.items():
        hit = [e["label"] for e in cache["lookups"] if e["hit"]]
        print(
            f"{name}: cache {cache['hits']} hit(s) {hit}, {cache['misses']} encoded ({cache['encoded_texts']} texts)"
        )
    print(
        f"load (1-min average) at start, after run 1, run 2, legacy eval: {[round(x, 1) for x in loads]} "
        f"on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
