"""What prompts change: one model exported with and without query/document prompts, scored on a BEIR split through
the served runtime (service.model.embedder + service.model.prompts, exactly as the gate scores it).

    python benchmarks/prompts_effect.py --model all-MiniLM-L6-v2 --data training/data/legal_lay \\
        --query-prompt "query: " --document-prompt "passage: "
    python benchmarks/prompts_effect.py --model artifacts/runs/<run>/model --data a/beir/folder --split test

Prints NDCG@10 per exported dim for: no prompts, and the given prompts (default: the model's own). fp32 only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", required=True, help="SentenceTransformer folder, Hub id or all-MiniLM-L6-v2"
    )
    parser.add_argument("--data", required=True, type=Path, help="a BEIR folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--query-prompt", default=None, help="default: the model's own")
    parser.add_argument("--document-prompt", default=None, help="default: the model's own")
    args = parser.parse_args()

    from benchmarks.harness import markdown_table
    from gates.evaluation.encoders import onnx_encoder
    from gates.evaluation.evaluate import score_encoder
    from training.data.loading import load_dataset
    from training.export.export_run import export_run
    from training.models import resolve_model_path

    view = load_dataset(args.data, "ir").split(args.split)
    qrels = {q: d for q, d in view.qrels.items() if q in view.queries}
    query_ids, doc_ids = sorted(qrels), sorted(view.corpus)
    ids = (query_ids, [view.queries[q] for q in query_ids], doc_ids, [view.corpus[d] for d in doc_ids], qrels)
    model_dir = resolve_model_path(args.model)
    variants = {
        "no prompts": {"query": "", "document": ""},
        "prompts": {"query": args.query_prompt, "document": args.document_prompt},
    }
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, prompts in variants.items():
            started = time.perf_counter()
            result = export_run(model_dir, Path(tmp) / name.replace(" ", "-"), int8=False, prompts=prompts)
            encoder = onnx_encoder(Path(tmp) / name.replace(" ", "-"), "fp32")
            retrieval, _ = score_encoder(encoder, *ids, result.dims, None, {}, name)
            rows[name] = (
                encoder.prompts,
                {r.dim: r.mean["ndcg@10"] for r in retrieval},
                time.perf_counter() - started,
            )
    dims = sorted(next(iter(rows.values()))[1], reverse=True)
    print(
        f"{args.model} on {args.data} ({args.split}: {len(query_ids)} queries, {len(doc_ids)} docs), NDCG@10, "
        f"served ONNX fp32"
    )
    table = []
    for prompts, scores, seconds in rows.values():
        label = "none" if not any(prompts.values()) else ", ".join(f"{k}={v!r}" for k, v in prompts.items())
        table.append([label, *(f"{scores[d]:.4f}" for d in dims), f"{seconds:.0f}"])
    print(markdown_table(["prompts", *(f"d{d}" for d in dims), "s"], table))


if __name__ == "__main__":
    main()
