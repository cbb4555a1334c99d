"""Hard-negative mining: `mine()` turns (anchor, positive) rows into (anchor, positive, negative_1..n) rows.

Strategies (MiningConfig.strategy): random, bm25 (lexical neighbours), model (the model's own top-k), curriculum
(an epoch ordered easy -> hard: random, then BM25, then model negatives), contradiction (NLI), partial_match
(texts sharing the positive's key terms), domain_confusion (texts from a related domain). Every strategy shares
the same filters (see candidates.py): never the positive itself, never a labelled positive of the same anchor,
never a candidate whose model score is within `relative_margin` of the positive's (likely unlabelled positive).
"""

from training.mining.mine import MinedSet, mine

__all__ = ["MinedSet", "mine"]
