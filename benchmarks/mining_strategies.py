"""Measured effect of each hard-negative mining strategy, everything else at embedgate's defaults.

    python benchmarks/mining_strategies.py --data artifacts/datasets/medical-qp \
        --strategies none,model,bm25,curriculum,partial_match,domain_confusion \
        --domain-texts artifacts/datasets/mediqa-faq.txt --out benchmarks/results/mining_medical.json

For each strategy: fine-tune (defaults: epochs from the data, best dev checkpoint, rotation when it helps), export,
and score the served ONNX fp32 graph on the test qrels (NDCG@10 at every dim). domain_confusion draws negatives
from --domain-texts (one text per line from a related but different domain). Development only.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import load_text  # noqa: E402


def run(data: Path, strategy: str, work: Path, domain_texts: Path | None) -> dict:
    from gates.evaluation.encoders import onnx_encoder
    from gates.evaluation.evaluate import evaluate_model
    from training.config import load_config
    from training.data.loading import load_dataset
    from training.export.export_run import export_run
    from training.finetune.train import train

    overrides = {
        "data.path": str(data),
        "data.type": "ir",
        "output_dir": str(work),
        "run_id": strategy,
        "mining.strategy": strategy,
    }
    if strategy == "domain_confusion":
        overrides["mining.domain_confusion_path"] = str(domain_texts)
    started = time.perf_counter()
    result = train(load_config(None, overrides), progress=False, keep_checkpoints=False)
    export_run(result.run_dir / "model", result.run_dir / "onnx", int8=False)
    view = load_dataset(data, "ir").split("test")
    encoder = onnx_encoder(result.run_dir / "onnx", "fp32")
    scores = evaluate_model(
        "candidate", strategy, str(result.run_dir), (encoder,), view, encoder.dims, None, {}
    )
    return {
        "strategy": strategy,
        "seconds": round(time.perf_counter() - started, 1),
        "ndcg@10": {e.dim: round(e.mean["ndcg@10"], 4) for e in scores.retrieval},
        "mining": result.mining,
        "rotation": (result.rotation or {}).get("applied"),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--strategies", default="none,model,bm25,curriculum,partial_match")
    parser.add_argument("--domain-texts", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in args.strategies.split(","):
            results.append(run(args.data.resolve(), strategy, Path(tmp), args.domain_texts))
            print(json.dumps({k: v for k, v in results[-1].items() if k != "mining"}), flush=True)
    print(load_text())
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
