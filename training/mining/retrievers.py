"""Candidate retrievers: each returns, per query, corpus indices ranked best-first (at most `k`)."""

from __future__ import annotations

import numpy as np


def bm25_rankings(queries: list[str], corpus: list[str], k: int) -> np.ndarray:
    """Lexical neighbours with bm25s (English stopwords, no stemmer): [n_queries, k] corpus indices."""
    import bm25s

    k = min(k, len(corpus))
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(corpus, stopwords="en", show_progress=False), show_progress=False)
    tokens = bm25s.tokenize(queries, stopwords="en", return_ids=False, show_progress=False)
    # A query made only of stopwords tokenises to nothing; bm25s then scores every doc 0: fine, ranks are arbitrary.
    docs, _ = retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
    return np.asarray(docs)


SCORE_BLOCK_BYTES = 64 * 2**20  # one block of query x corpus scores; the rest is never materialised


def dense_rankings(query_emb: np.ndarray, corpus_emb: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """The model's own top-k by cosine (embeddings are unit-norm), ties broken by corpus index. Scores are made
    `chunk` queries at a time, fewer when the corpus is large, so a block stays under SCORE_BLOCK_BYTES (1,024
    queries against 500k passages would be 2 GB in float32)."""
    k = min(k, corpus_emb.shape[0])
    row_bytes = max(1, corpus_emb.shape[0]) * np.dtype(np.result_type(query_emb, corpus_emb)).itemsize
    chunk = max(1, min(chunk, SCORE_BLOCK_BYTES // row_bytes))
    out = np.empty((query_emb.shape[0], k), dtype=np.int64)
    for start in range(0, query_emb.shape[0], chunk):
        scores = query_emb[start : start + chunk] @ corpus_emb.T
        top = (
            np.argpartition(-scores, k - 1, axis=1)[:, :k]
            if k < scores.shape[1]
            else np.tile(np.arange(scores.shape[1]), (scores.shape[0], 1))
        )
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.lexsort((top, -top_scores), axis=1)
        out[start : start + chunk] = np.take_along_axis(top, order, axis=1)
    return out


def random_rankings(n_queries: int, n_corpus: int, k: int, rng: np.random.Generator) -> np.ndarray:
    k = min(k, n_corpus)
    return (
        np.stack([rng.choice(n_corpus, size=k, replace=False) for _ in range(n_queries)])
        if n_queries
        else np.empty((0, k), dtype=np.int64)
    )
