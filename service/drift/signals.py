"""The drift signals as plain functions over arrays. The Evidently metrics run them on each window and the
calibration runs them on reference-vs-reference splits, so a threshold is calibrated on exactly what it judges.

    embedding    ROC AUC of Evidently's classifier method telling window rows from reference rows (0.5: the
                 same distribution, 1.0: fully separable). GUIDE: the default classifier method, not `ratio`,
                 which false-alarmed on same-distribution data.
    retrieval    how much lower the window's mean cosine to its nearest reference-corpus document is than the
                 *held-out* reference queries' mean (queries the corpus cannot answer well score low). Held-out:
                 the model was fine-tuned on the others, which sit closer to their documents than any new query.
    novelty      share of the window's distinct rows whose cosine to the nearest reference query is below what
                 all but NOVELTY_QUANTILE of the held-out queries reach (a per-row score's tail share: it sees a
                 minority of off-domain rows that moves a window mean too little to notice).
    descriptors  share of text descriptors whose distribution drifted (Evidently's per-column tests).
"""

from __future__ import annotations

import numpy as np

from service.drift.errors import DriftInputError

SIGNALS = ("embedding", "retrieval", "novelty", "descriptors")
# Rows equal to 4 decimals count as one: the same text can embed with float noise when padded differently.
DEDUP_DECIMALS = 4
MIN_CLASSIFIER_ROWS = 4  # per side; the classifier's 50/50 split needs both classes in its test half
# The novelty cutoff: the held-out queries' nearest-reference-query cosine at this quantile (see docs/drift.md).
NOVELTY_QUANTILE = 0.05


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
        raise DriftInputError(f"current and reference embeddings must have the same dim; got {current.shape[1]} "
                              f"and {reference.shape[1]}")
    current, reference = distinct_rows(current), distinct_rows(reference)
    if min(len(current), len(reference)) < MIN_CLASSIFIER_ROWS:
        raise DriftInputError(f"the classifier needs at least {MIN_CLASSIFIER_ROWS} distinct rows per side; got "
                              f"{len(current)} current and {len(reference)} reference")
    method = drift_method if drift_method is not None else ModelDriftMethod(bootstrap=False)
    # Evidently's method adds a `target` column to the frames it gets: give it fresh ones.
    score, _, _ = method(pd.DataFrame(current), pd.DataFrame(reference))
    return float(score)


def nearest_doc_cosine(queries: np.ndarray, corpus: np.ndarray, chunk_rows: int = 1024) -> np.ndarray:
    """For each unit-length query, the cosine to its nearest unit-length corpus document."""
    queries, corpus = _as_matrix(queries, "queries"), _as_matrix(corpus, "corpus")
    if queries.shape[1] != corpus.shape[1]:
        raise DriftInputError(f"queries and corpus must have the same dim; got {queries.shape[1]} and "
                              f"{corpus.shape[1]}")
    if len(corpus) == 0:
        raise DriftInputError("the corpus sample is empty; the retrieval signal needs at least one document")
    return np.concatenate([(queries[start : start + chunk_rows] @ corpus.T).max(axis=1)
                           for start in range(0, len(queries), chunk_rows)] or [np.zeros(0, np.float32)])


def distinct_mask(matrix: np.ndarray) -> np.ndarray:
    """True at the first occurrence of each distinct row (same rounding as `distinct_rows`)."""
    mask = np.zeros(len(matrix), dtype=bool)
    if len(matrix):
        _, first = np.unique(np.round(matrix, DEDUP_DECIMALS), axis=0, return_index=True)
        mask[first] = True
    return mask


def nearest_query_cosine(rows: np.ndarray, reference_queries: np.ndarray, chunk_rows: int = 1024) -> np.ndarray:
    """For each unit-length row, the cosine to its nearest reference query (the novelty score: low = novel)."""
    return nearest_doc_cosine(rows, reference_queries, chunk_rows)


def novelty_cutoff(held_out_scores: np.ndarray, quantile: float = NOVELTY_QUANTILE) -> float:
    """The cosine below which a row counts as novel: the `quantile` of the held-out queries' scores."""
    scores = np.asarray(held_out_scores, dtype=np.float64)
    if len(scores) == 0:
        raise DriftInputError("novelty_cutoff needs the held-out queries' scores; got none")
    return float(np.quantile(scores, quantile))


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
        raise DriftInputError(f"retrieval_drop needs values on both sides; got {len(current)} current and "
                              f"{len(reference_nearest)} reference")
    return float(np.mean(reference_nearest) - np.mean(current))


def _as_matrix(values: np.ndarray, name: str) -> np.ndarray:
    matrix = np.asarray(values, dtype=np.float32)
    if matrix.ndim != 2:
        raise DriftInputError(f"{name}: expected a 2-d array [rows, dim], got shape {matrix.shape}")
    return matrix
