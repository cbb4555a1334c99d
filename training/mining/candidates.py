"""The filters every mining strategy shares, applied to ranked candidate lists.

Candidates are corpus indices ranked best-first by some retriever. For each anchor we skip the first
`range_min` ranks, stop at `range_max`, drop labelled positives, and drop candidates whose model similarity to the
anchor is above (1 - relative_margin) x the positive's similarity: a negative that the model already scores as
well as the positive is more likely an unlabelled positive than a useful negative (false-negative filter).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FilterStats:
    skipped_positive: int = 0
    skipped_margin: int = 0
    filled_random: int = 0  # negative slots filled with random corpus texts when too few candidates passed

    def to_dict(self) -> dict[str, int]:
        return dict(vars(self))


def pick_negatives(
    ranked: np.ndarray,
    *,
    forbidden: set[int],
    anchor_scores: np.ndarray | None,
    positive_score: float | None,
    num_negatives: int,
    range_min: int,
    range_max: int,
    relative_margin: float,
    sampling: str,
    rng: np.random.Generator,
    stats: FilterStats,
) -> list[int]:
    """Choose `num_negatives` corpus indices from `ranked` (best first) that pass every filter."""
    window = ranked[range_min:range_max]
    kept = []
    limit = None
    if anchor_scores is not None and positive_score is not None and relative_margin is not None:
        limit = positive_score - abs(positive_score) * relative_margin
    for idx in window:
        idx = int(idx)
        if idx in forbidden:
            stats.skipped_positive += 1
            continue
        if limit is not None and anchor_scores[idx] > limit:
            stats.skipped_margin += 1
            continue
        kept.append(idx)
        if sampling == "top" and len(kept) == num_negatives:
            break
    if sampling == "random" and len(kept) > num_negatives:
        kept = list(rng.choice(kept, size=num_negatives, replace=False))
    return kept


def fill_random(
    chosen: list[int],
    *,
    n_corpus: int,
    forbidden: set[int],
    num_negatives: int,
    rng: np.random.Generator,
    stats: FilterStats,
) -> list[int]:
    """Top up with random corpus texts (easy negatives) so every row has exactly `num_negatives`."""
    taken = set(chosen) | forbidden
    attempts = 0
    while len(chosen) < num_negatives and attempts < 100 * num_negatives and len(taken) < n_corpus:
        idx = int(rng.integers(n_corpus))
        attempts += 1
        if idx not in taken:
            chosen.append(idx)
            taken.add(idx)
            stats.filled_random += 1
    return chosen
