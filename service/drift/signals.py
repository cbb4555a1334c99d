"""The drift signals as plain functions over arrays. The Evidently metrics run them on each window and the
calibration runs them on reference-vs-reference splits, so a threshold is calibrated on exactly what it judges.

    embedding    ROC AUC of Evidently's classifier method telling window rows from reference rows (0.5: the
                 same distribution, 1.0: fully separable). GUIDE: the default classifier method, not `ratio`,
                 which false-alarmed on same-distribution data.
    retrieval    how much lower the window's mean cosine to its nearest reference-corpus document is than the
                 *held-out* reference queries' mean (queries the corpus cannot answer well score low). Held-out:
                 the model was fine-tuned on the others, which sit closer to their documents than any new query.
    novelty      share of the window's rows whose cosine to the nearest reference query is below what all but
                 NOVELTY_QUANTILE of the held-out queries reach (a per-row score's tail share: it sees a minority
                 of off-domain rows that moves a window mean too little to notice); its threshold follows from
                 order statistics for the window's effective rows (`novelty_threshold`).
    descriptors  share of text descriptors whose distribution drifted (Evidently's per-column tests).
"""

from __future__ import annotations

import numpy as np

from service.drift.errors import DriftInputError

SIGNALS = ("embedding", "retrieval", "novelty", "descriptors")
# Rows equal to 4 decimals count as one: the same text can embed with float noise when padded differently.
DEDUP_DECIMALS = 4
MIN_CLASSIFIER_ROWS = 4  # per side; the classifier's 50/50 split needs both classes in its test half
# The novelty cutoff: the held-out queries' nearest-reference-query cosine at this quantile. Measured on the demo's
# pipeline model (docs/drift.md): 1% left the widest margin between a 20% shift and the window threshold.
NOVELTY_QUANTILE = 0.01


def distinct_rows(matrix: np.ndarray) -> np.ndarray:
    """`matrix` without repeated rows, in first-seen order."""
    _, first = np.unique(np.round(matrix, DEDUP_DECIMALS), axis=0, return_index=True)
    return matrix[np.sort(first)]


def embedding_drift_score(current: np.ndarray, reference: np.ndarray, drift_method: object = None) -> float:
    """Evidently's classifier drift score (ROC AUC) between two embedding sets [rows, dim].

    Repeated rows are dropped from each side first: a query repeated in the window lands on both sides of the
    classifier's train/test split and is *recognised*, which reads as drift although nothing changed."""
    import pandas as pd
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import ModelDriftMethod

    current, reference = _as_matrix(current, "current"), _as_matrix(reference, "reference")
    if current.shape[1] != reference.shape[1]:
        raise DriftInputError(
            f"current and reference embeddings must have the same dim; got {current.shape[1]} "
            f"and {reference.shape[1]}"
        )
    current, reference = distinct_rows(current), distinct_rows(reference)
    if min(len(current), len(reference)) < MIN_CLASSIFIER_ROWS:
        raise DriftInputError(
            f"the classifier needs at least {MIN_CLASSIFIER_ROWS} distinct rows per side; got "
            f"{len(current)} current and {len(reference)} reference"
        )
    method = drift_method if drift_method is not None else ModelDriftMethod(bootstrap=False)
    # Evidently's method adds a `target` column to the frames it gets: give it fresh ones.
    score, _, _ = method(pd.DataFrame(current), pd.DataFrame(reference))
    return float(score)


def nearest_doc_cosine(queries: np.ndarray, corpus: np.ndarray, chunk_rows: int = 1024) -> np.ndarray:
    """For each unit-length query, the cosine to its nearest unit-length corpus document."""
    queries, corpus = _as_matrix(queries, "queries"), _as_matrix(corpus, "corpus")
    if queries.shape[1] != corpus.shape[1]:
        raise DriftInputError(
            f"queries and corpus must have the same dim; got {queries.shape[1]} and {corpus.shape[1]}"
        )
    if len(corpus) == 0:
        raise DriftInputError("the corpus sample is empty; the retrieval signal needs at least one document")
    return np.concatenate(
        [
            (queries[start : start + chunk_rows] @ corpus.T).max(axis=1)
            for start in range(0, len(queries), chunk_rows)
        ]
        or [np.zeros(0, np.float32)]
    )


def nearest_query_cosine(
    rows: np.ndarray, reference_queries: np.ndarray, chunk_rows: int = 1024
) -> np.ndarray:
    """For each unit-length row, the cosine to its nearest reference query (the novelty score: low = novel)."""
    return nearest_doc_cosine(rows, reference_queries, chunk_rows)


def novelty_rank(held_out_count: int, quantile: float = NOVELTY_QUANTILE) -> int:
    """Which order statistic of the held-out scores is the cutoff: the k-th lowest, k = ceil(quantile * (H + 1))."""
    return max(1, int(np.ceil(quantile * (held_out_count + 1))))


def novelty_cutoff(held_out_scores: np.ndarray, quantile: float = NOVELTY_QUANTILE) -> float:
    """The cosine below which a row counts as novel: the k-th lowest held-out score (`novelty_rank`). A new query
    of the held-out queries' kind falls below it with probability p ~ Beta(k, H + 1 - k), mean about `quantile`."""
    scores = np.sort(np.asarray(held_out_scores, dtype=np.float64))
    if len(scores) == 0:
        raise DriftInputError("novelty_cutoff needs the held-out queries' scores; got none")
    return float(scores[novelty_rank(len(scores), quantile) - 1])


def effective_rows(rows: np.ndarray) -> int:
    """n^2 / sum(count^2) over the distinct rows: a window of n rows that repeats queries carries the evidence of
    fewer independent ones (n distinct rows: n; one row n times: 1)."""
    if len(rows) == 0:
        return 0
    _, counts = np.unique(np.round(rows, DEDUP_DECIMALS), axis=0, return_counts=True)
    return max(1, int(len(rows) ** 2 // int((counts.astype(np.int64) ** 2).sum())))


def novelty_threshold(
    rows: int, held_out_count: int, alpha: float, floor: float, quantile: float = NOVELTY_QUANTILE
) -> float:
    """The novel-row share a window of `rows` effective rows of new same-domain traffic stays under with
    probability 1 - alpha: the count of rows below the k-th of H held-out scores is Beta-Binomial(rows, k,
    H + 1 - k) (order statistics of exchangeable scores). Exact for any window size, where resampling the
    held-out queries could only calibrate pseudo-windows of H / 2 rows."""
    from scipy.stats import betabinom

    if rows < 1 or held_out_count < 1:
        return 1.0
    k = novelty_rank(held_out_count, quantile)
    return round(max(float(betabinom.ppf(1 - alpha, rows, k, held_out_count + 1 - k)) / rows, floor), 4)


def tail_share(scores: np.ndarray, cutoff: float) -> float:
    """Share of the scored rows (NaN rows left out) below `cutoff`."""
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores[~np.isnan(scores)]
    if len(scores) == 0:
        raise DriftInputError("tail_share needs at least one scored row; got none")
    return float(np.mean(scores < cutoff))


def retrieval_drop(current_nearest: np.ndarray, reference_nearest: np.ndarray) -> float:
    """Reference mean minus current mean of nearest-document cosines (positive: the window is served worse)."""
    current = np.asarray(current_nearest, dtype=np.float64)
    current = current[~np.isnan(current)]
    if len(current) == 0 or len(reference_nearest) == 0:
        raise DriftInputError(
            f"retrieval_drop needs values on both sides; got {len(current)} current and "
            f"{len(reference_nearest)} reference"
        )
    return float(np.mean(reference_nearest) - np.mean(current))


def _as_matrix(values: np.ndarray, name: str) -> np.ndarray:
    matrix = np.asarray(values, dtype=np.float32)
    if matrix.ndim != 2:
        raise DriftInputError(f"{name}: expected a 2-d array [rows, dim], got shape {matrix.shape}")
    return matrix
