"""Evaluation during training: a held-out dev set scored at every Matryoshka dim from ONE encoding.

sentence-transformers' InformationRetrievalEvaluator encodes once per `truncate_dim`, which costs 4x on CPU for
4 dims; slicing and re-normalising one full-dim encoding gives the same vectors. The primary metric is the mean
NDCG@10 over dims, so best-checkpoint selection protects the small dims as well as the full one. (The gate's
metrics live in `gates/`; `training` may not import them, and this needs only binary NDCG@10.)
"""

from __future__ import annotations

import numpy as np
from sentence_transformers.base.evaluation.evaluator import BaseEvaluator


def binary_ndcg_at_k(scores: np.ndarray, relevant: list[set[int]], k: int = 10) -> float:
    """Mean binary NDCG@k over queries; `scores` is [queries, docs]; ties broken by doc index."""
    return float(np.mean(binary_ndcg_per_query(scores, relevant, k))) if len(relevant) else 0.0


def binary_ndcg_per_query(scores: np.ndarray, relevant: list[set[int]], k: int = 10) -> np.ndarray:
    """Binary NDCG@k of each query (the paired unit for training/finetune/dev_noise.py)."""
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    out = np.zeros(len(relevant))
    for i, (row, rel) in enumerate(zip(order, relevant, strict=True)):
        gains = np.fromiter((1.0 if d in rel else 0.0 for d in row), dtype=float, count=k)
        ideal = discounts[: min(len(rel), k)].sum()
        out[i] = float(gains @ discounts) / ideal if ideal else 0.0
    return out


class MatryoshkaRetrievalEvaluator(BaseEvaluator):
    """NDCG@10 of dev queries against a dev corpus at each dim; primary metric `ndcg@10_mean`."""

    def __init__(
        self,
        queries: list[str],
        corpus: list[str],
        relevant: list[set[int]],
        dims: list[int],
        name: str = "dev",
        batch_size: int = 64,
    ):
        super().__init__()
        self.queries, self.corpus, self.relevant = queries, corpus, relevant
        self.dims = sorted(dims, reverse=True)
        self.name = name
        self.batch_size = batch_size
        self.primary_metric = "ndcg@10_mean"
        self.per_query_history: dict[
            int, np.ndarray
        ] = {}  # global step -> per-query scores (checkpoint choice)
        # step -> (query, corpus) embeddings, for the best and the latest step only: the model training ends with is
        # one of them (training/finetune/checkpoint_choice.py), and the rotation's decision and the final dev metrics reuse
        # them instead of encoding the whole corpus twice more (`encodings_of`). 15 MB each for 10,000 x 384.
        self._encodings: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def encode(self, model) -> tuple[np.ndarray, np.ndarray]:
        # encode_query / encode_document apply the model's query and document prompts (training/prompts.py).
        q = model.encode_query(
            self.queries, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False
        )
        d = model.encode_document(
            self.corpus, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False
        )
        return q, d

    def scores(self, q: np.ndarray, d: np.ndarray) -> dict[str, float]:
        """NDCG@10 per dim (and their mean) from full-dim query and corpus embeddings."""
        metrics = {}
        for dim in self.dims:
            qs, ds = _unit(q[:, :dim]), _unit(d[:, :dim])
            metrics[f"ndcg@10_d{dim}"] = binary_ndcg_at_k(qs @ ds.T, self.relevant)
        metrics["ndcg@10_mean"] = float(np.mean([metrics[f"ndcg@10_d{dim}"] for dim in self.dims]))
        return metrics

    def per_query(self, q: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Each query's NDCG@10 averaged over dims: what the dev decisions compare, query by query."""
        return np.mean(list(self.per_query_by_dim(q, d).values()), axis=0)

    def per_query_by_dim(self, q: np.ndarray, d: np.ndarray) -> dict[int, np.ndarray]:
        """Each query's NDCG@10 at each dim (the rotation decision checks that no dim is hurt)."""
        return {
            dim: binary_ndcg_per_query(_unit(q[:, :dim]) @ _unit(d[:, :dim]).T, self.relevant)
            for dim in self.dims
        }

    def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        q, d = self.encode(model)
        scores = self.scores(q, d)
        if steps >= 0:
            self.per_query_history[steps] = self.per_query(q, d)
            self._keep(steps, q, d)
        metrics = self.prefix_name_to_metrics(scores, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics

    def _keep(self, step: int, q: np.ndarray, d: np.ndarray) -> None:
        # The best step by mean NDCG@10 (the mean of a step's per-query scores); the first of equals, as the
        # Trainer's strictly-greater rule picks its best checkpoint.
        best = max(self.per_query_history, key=lambda s: float(self.per_query_history[s].mean()))
        self._encodings[step] = (q, d)
        for old in [s for s in self._encodings if s not in (step, best)]:
            del self._encodings[old]

    def encodings_of(self, model, probe: int = 16) -> dict[tuple[str, str], np.ndarray]:
        """{(role, text): embedding} of the dev queries and corpus from a kept step whose model this is (checked
        by encoding `probe` dev queries again: cosine >= 0.9999 to the kept ones), or {} when none is."""
        texts = self.queries[:probe]
        if not self._encodings or not texts:
            return {}
        fresh = model.encode_query(
            texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False
        )
        for q, d in self._encodings.values():
            if float(np.min(np.sum(_unit(fresh) * _unit(q[: len(texts)]), axis=1))) >= 0.9999:
                return {
                    **{("query", t): e for t, e in zip(self.queries, q, strict=True)},
                    **{("document", t): e for t, e in zip(self.corpus, d, strict=True)},
                }
        return {}

    def metrics_from(
        self, known: dict[tuple[str, str], np.ndarray], matrix: np.ndarray | None = None
    ) -> dict:
        """The dev metrics (as __call__ returns them) from known embeddings, optionally with a linear transform
        applied to them (training/matryoshka/rotation.py: the model's last layer before Normalize)."""
        q = np.stack([known[("query", t)] for t in self.queries])
        d = np.stack([known[("document", t)] for t in self.corpus])
        if matrix is not None:
            q, d = q @ matrix.T, d @ matrix.T
        return self.prefix_name_to_metrics(self.scores(q, d), self.name)


def _unit(x: np.ndarray) -> np.ndarray:
    # The same re-normalisation as service.model.embedder.truncate_dims (which serving, drift and the gate share); training
    # may not import service (ARCHITECTURE.md), and the dev score only steers training, so it keeps this one line.
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
