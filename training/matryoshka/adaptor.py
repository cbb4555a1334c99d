"""A post-hoc Matryoshka-Adaptor (Yoon et al. 2024): a linear map trained on frozen embeddings so that every prefix
keeps the full-dim similarity structure.

Why, next to the orthogonal rotation (training/matryoshka/rotation.py, rotation_learning.py): a rotation can only choose
*which* directions the first k dims keep; a general linear map may also re-weight them, which changes the cosine
similarities a truncated vector gives after re-normalisation. The objective is the paper's, on a linear map so that it
is exportable as the same bias-free `Dense` layer the rotation uses:

- pairwise: |cos(Wx_i[:k], Wx_j[:k]) - cos(x_i, x_j)| over a batch of the domain's texts, for every dim k;
- top-k: the same, on each text's `TOP_K` nearest neighbours (what retrieval ranks), for every dim k;
- at the full dim both terms keep W close to a similarity-preserving map, so full-dim quality should move little
  (unlike the rotation, it is not exactly unchanged: the benchmark and the decision measure it);
- an optional ranking term (MultipleNegativesRankingLoss of the training pairs against the whole corpus, at the
  small dims), weighted `rank_weight`.

It starts from the PCA rotation (W = R + Delta, Delta = 0), so step 0 is today's PCA-only rotation. Bias-free on
purpose: W(cx) = c Wx, so the map is the same whether it sees the pooled or the normalised vector.
Frozen embeddings: a step costs milliseconds on CPU; nothing here encodes text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STEPS = 300
LEARNING_RATE = 1e-4
BATCH_TEXTS = 512  # texts per step for the similarity terms
BATCH_PAIRS = 512  # anchors per step for the ranking term
TOP_K = 10
SCALE = 20.0  # MultipleNegativesRankingLoss's similarity scale


@dataclass(frozen=True)
class LearnedAdaptor:
    matrix: np.ndarray  # [out_dim, in_dim]: y = matrix @ x, as a bias-free Dense layer
    steps: int
    history: list[dict]


def learn_adaptor(
    init: np.ndarray,
    texts: np.ndarray,
    dims: list[int],
    anchors: np.ndarray | None = None,
    positives: np.ndarray | None = None,
    corpus: np.ndarray | None = None,
    rank_weight: float = 0.0,
    seed: int = 0,
    steps: int = STEPS,
    learning_rate: float = LEARNING_RATE,
) -> LearnedAdaptor:
    """`texts`: unit embeddings of the domain (corpus and training anchors, never test queries); `init`: the start
    (the PCA rotation). With `rank_weight` > 0, `anchors[i]` should retrieve `corpus[positives[i]]`."""
    import torch

    texts = np.asarray(texts, dtype=np.float32)
    full = texts.shape[1]
    if init.shape != (full, full):
        raise ValueError(f"init must be [{texts.shape[1]}, {texts.shape[1]}], got {list(init.shape)}")
    bad = [d for d in dims if not 0 < d <= full]
    if bad:
        raise ValueError(f"dims {bad} are outside 1..{full} (the embedding dim)")
    if len(texts) < 2:
        raise ValueError(f"need at least 2 texts to learn an adaptor, got {len(texts)}")
    ranking = rank_weight > 0
    if ranking and (anchors is None or positives is None or corpus is None or not len(anchors)):
        raise ValueError("rank_weight > 0 needs anchors, positives and corpus (the training pairs)")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    start = torch.tensor(init, dtype=torch.float32)
    delta = torch.zeros_like(start, requires_grad=True)
    optimizer = torch.optim.Adam([delta], lr=learning_rate)
    texts_t = torch.tensor(texts)
    if ranking:
        anchors_t = torch.tensor(np.asarray(anchors, dtype=np.float32))
        corpus_t = torch.tensor(np.asarray(corpus, dtype=np.float32))
        targets = torch.tensor(np.asarray(positives), dtype=torch.long)
    every = sorted(set(dims) | {full})  # the full dim keeps the whole map similarity-preserving
    small = [d for d in every if d < full]
    history = []
    for step in range(1, steps + 1):
        batch = texts_t[rng.choice(len(texts), size=min(BATCH_TEXTS, len(texts)), replace=False)]
        target = batch @ batch.T
        neighbours = _top_k_mask(target, TOP_K)
        mapped = batch @ (start + delta).T
        pair = top = 0.0
        for d in every:
            part = torch.nn.functional.normalize(mapped[:, :d], dim=1)
            error = (part @ part.T - target).abs()
            pair = pair + error.mean()
            top = top + error[neighbours].mean()
        loss = (pair + top) / len(every)
        rank = None
        if ranking and small:
            chosen = rng.choice(len(targets), size=min(BATCH_PAIRS, len(targets)), replace=False)
            queries, docs = anchors_t[chosen] @ (start + delta).T, corpus_t @ (start + delta).T
            rank = sum(_ranking_loss(queries[:, :d], docs[:, :d], targets[chosen]) for d in small) / len(
                small
            )
            loss = loss + rank_weight * rank
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == 1 or step % 50 == 0 or step == steps:
            history.append(
                {
                    "step": step,
                    "loss": round(float(loss.detach()), 5),
                    "rank": None if rank is None else round(float(rank.detach()), 5),
                }
            )
    return LearnedAdaptor((start + delta).detach().numpy().copy(), steps, history)


def _top_k_mask(similarity, k: int):
    """Each row's k most similar other texts (the diagonal, a text with itself, excluded)."""
    import torch

    n = similarity.shape[0]
    k = min(k, n - 1)
    masked = similarity - 2 * torch.eye(n)  # cosines are >= -1, so -2 puts the diagonal last
    index = masked.topk(k, dim=1).indices
    mask = torch.zeros(n, n, dtype=torch.bool)
    mask[torch.arange(n).unsqueeze(1), index] = True
    return mask


def _ranking_loss(queries, docs, targets):
    import torch

    q = torch.nn.functional.normalize(queries, dim=1)
    d = torch.nn.functional.normalize(docs, dim=1)
    return torch.nn.functional.cross_entropy(SCALE * q @ d.T, targets)
