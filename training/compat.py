"""Backward-compatible embeddings: a linear map B from a new model's space into an old version's space, so that
clients holding vectors of the old version get the new model's gains without re-embedding.

    fit = fit_backward_map(new_queries, new_docs, old_docs, positives, dims=[384, 256, 128, 64])
    compat_model = add_backward_map(new_model, fit.weight)      # Transformer -> Pooling -> ... -> Dense(B) -> Normalize

How (after BC-Aligner, Hu et al., KDD 2022: a light backward transformation trained with the new model; and the
"query-side only against frozen old document vectors" variant of BCT, Shen et al., CVPR 2020):

1. Start from the least-squares map new -> old over the domain's texts (queries and documents embedded by both
   models): B then reproduces the old space as closely as a linear map can (ridge, so it is well posed).
2. Train B with the task's ranking loss where the documents are the OLD version's vectors, fixed: every training
   query, mapped by B, must rank its positive's old vector above the other positives of its batch
   (MultipleNegativesRankingLoss, in-batch negatives), at each of the old version's Matryoshka dims. Measured
   against the alternative of the whole stored corpus as negatives (benchmarks/compat_upgrade.py): that one learns
   which documents are answers and lost beyond noise on SciFact's test queries with unseen answers (64d -0.059),
   where in-batch negatives did not (-0.003, within noise) and gained more on the legal set.
   An alignment term keeps B(new(doc)) close to old(doc), so documents a client adds later, embedded in the
   compatible space, stay comparable with the ones it stored.
3. Keep the step with the best held-out ranking (a slice of the training queries, never the eval set).

Why a linear map and not a second encoder: it is fitted on frozen embeddings in seconds, it cannot change the new
model itself (so the new space costs nothing: new-new quality is exactly the same), and it exports as one Dense
module inside the same self-contained ONNX graph. Why not the plain least-squares map alone: it can only reproduce
the old space, never improve on it; the ranking term is what carries the new model's gain across.

Torch is imported lazily; the arrays in are float32, L2-normalised rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

SCALE = 20.0  # MultipleNegativesRankingLoss' similarity scale (1 / temperature)
LEARNING_RATE = 2e-3
MAX_EPOCHS = 30
PATIENCE = 5  # epochs without a held-out gain before stopping
BATCH_QUERIES = 256
ALIGN_WEIGHT = 1.0  # weight of the document alignment term (mean squared distance of unit vectors)
RIDGE = 1e-2
HELD_OUT_FRACTION = 0.15
MAX_NEGATIVE_DOCS = 20_000  # the softmax's document set is capped (positives always kept) to bound memory


class CompatError(ValueError):
    """The inputs to a backward map do not fit together."""


@dataclass(frozen=True)
class BackwardMap:
    weight: np.ndarray  # (new_dim, old_dim): old-space vector = normalise(new_vector @ weight)
    epochs: int  # training epochs run (0: the least-squares start was kept)
    best_epoch: int
    held_out_queries: int
    held_out_mrr: float  # MRR@10 of the kept map on the held-out training queries, at the smallest dim
    start_mrr: float  # the same for the least-squares start
    seconds: float
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "new_dim": int(self.weight.shape[0]),
            "old_dim": int(self.weight.shape[1]),
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "held_out_queries": self.held_out_queries,
            "held_out_mrr@10": round(self.held_out_mrr, 4),
            "start_mrr@10": round(self.start_mrr, 4),
            "seconds": round(self.seconds, 2),
            "history": self.history,
        }


def least_squares_map(new: np.ndarray, old: np.ndarray, ridge: float = RIDGE) -> np.ndarray:
    """The ridge solution of min ||new @ W - old||^2 + ridge ||W||^2: (new_dim, old_dim)."""
    gram = new.T @ new + ridge * len(new) / new.shape[1] * np.eye(new.shape[1], dtype=np.float64)
    return np.linalg.solve(gram, new.T.astype(np.float64) @ old).astype(np.float32)


def fit_backward_map(
    new_queries: np.ndarray,
    new_docs: np.ndarray,
    old_docs: np.ndarray,
    positives: list[set[int]],
    dims: list[int],
    *,
    old_queries: np.ndarray | None = None,
    seed: int = 0,
    max_epochs: int = MAX_EPOCHS,
    learning_rate: float = LEARNING_RATE,
    align_weight: float = ALIGN_WEIGHT,
    ranking: bool = True,
    negatives: str = "batch",
) -> BackwardMap:
    """Fit B. `new_queries[i]` should retrieve the documents `positives[i]` (row indices of `new_docs`/`old_docs`,
    the same documents embedded by the new and by the old model). `dims`: the old version's Matryoshka dims (the
    largest is its full dim). `old_queries` (the queries by the old model) join the least-squares start when given.
    `ranking=False` returns the least-squares map alone (the measured alternative). `negatives`: "corpus" (each
    query against every stored document) or "batch" (against the other positives of its batch only, as
    MultipleNegativesRankingLoss: it cannot learn which documents are answers as much)."""
    if negatives not in ("corpus", "batch"):
        raise CompatError(f"negatives={negatives!r}: expected 'corpus' or 'batch'")
    started = time.perf_counter()
    _check(new_queries, new_docs, old_docs, positives, dims, old_queries)
    rng = np.random.default_rng(seed)
    texts_new = new_docs if old_queries is None else np.vstack([new_docs, new_queries])
    texts_old = old_docs if old_queries is None else np.vstack([old_docs, old_queries])
    start = least_squares_map(texts_new, texts_old)
    labelled = [i for i, docs in enumerate(positives) if docs]
    order = rng.permutation(labelled)
    n_held = max(1, int(len(order) * HELD_OUT_FRACTION)) if len(order) >= 20 else 0
    held, train = order[:n_held], order[n_held:]
    smallest = min(dims)

    def held_out_mrr(weight: np.ndarray) -> float:
        if not n_held:
            return float("nan")
        return _mrr_at_10(
            _project(new_queries[held], weight, smallest), _unit(old_docs[:, :smallest]), held, positives
        )

    start_mrr = held_out_mrr(start)
    if not ranking or not len(train):
        return BackwardMap(start, 0, 0, n_held, start_mrr, start_mrr, time.perf_counter() - started)
    weight, best_epoch, best, history = _train(
        start, new_queries, new_docs, old_docs, positives, train, dims, rng, seed, max_epochs,
        learning_rate, align_weight, held_out_mrr, start_mrr, negatives,
    )  # fmt: skip
    return BackwardMap(
        weight, len(history), best_epoch, n_held, best, start_mrr, time.perf_counter() - started, history
    )


def _train(start, new_queries, new_docs, old_docs, positives, train, dims, rng, seed, max_epochs, lr, align,
           held_out_mrr, start_mrr, negatives="corpus"):  # fmt: skip
    import torch

    torch.manual_seed(seed)
    doc_rows = _doc_rows(positives, train, len(old_docs), rng)
    row_of = {doc: position for position, doc in enumerate(doc_rows)}
    old_set = {
        d: torch.nn.functional.normalize(torch.from_numpy(old_docs[doc_rows, :d]), dim=1) for d in dims
    }
    new_doc_t, old_doc_t = torch.from_numpy(new_docs), torch.from_numpy(old_docs)
    weight = torch.nn.Parameter(torch.from_numpy(start.copy()))
    optimiser = torch.optim.Adam([weight], lr=lr)
    best, best_epoch, best_weight, stale, history = start_mrr, 0, start.copy(), 0, []
    # one positive per (query, positive) pair; the query's other positives are masked out of its negatives
    pairs = [(q, doc) for q in train for doc in sorted(positives[q])]
    for epoch in range(1, max_epochs + 1):
        losses = []
        for chunk in np.array_split(rng.permutation(len(pairs)), max(1, len(pairs) // BATCH_QUERIES)):
            queries = [pairs[i][0] for i in chunk]
            targets = torch.tensor([row_of[pairs[i][1]] for i in chunk])
            mapped = torch.from_numpy(new_queries[queries]) @ weight
            loss = torch.zeros(())
            mask = _mask(queries, positives, targets, row_of, len(doc_rows))
            columns, labels = torch.arange(len(doc_rows)), targets
            if negatives == "batch":  # only the batch's own positives compete
                columns, labels = torch.unique(targets, return_inverse=True)
            for d in dims:
                logits = SCALE * torch.nn.functional.normalize(mapped[:, :d], dim=1) @ old_set[d][columns].T
                logits = logits.masked_fill(mask[:, columns], -1e4)
                loss = loss + torch.nn.functional.cross_entropy(logits, labels)
            docs = torch.from_numpy(
                rng.choice(len(new_docs), size=min(len(new_docs), 4 * len(chunk)), replace=False)
            )
            aligned = torch.nn.functional.normalize(new_doc_t[docs] @ weight, dim=1)
            loss = loss / len(dims) + align * ((aligned - old_doc_t[docs]) ** 2).sum(dim=1).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        current = weight.detach().numpy().copy()
        score = held_out_mrr(current)
        history.append(
            {"epoch": epoch, "loss": round(float(np.mean(losses)), 5), "held_out_mrr@10": round(score, 4)}
        )
        if score > best + 1e-4:
            best, best_epoch, best_weight, stale = score, epoch, current, 0
        else:
            stale += 1
            if stale >= PATIENCE:
                break
    return best_weight, best_epoch, best, history


def _doc_rows(positives, train, n_docs, rng) -> list[int]:
    """The documents of the softmax: every training positive, then the rest (a sample when there are too many)."""
    needed = sorted({doc for q in train for doc in positives[q]})
    rest = np.setdiff1d(np.arange(n_docs), needed)
    room = max(0, MAX_NEGATIVE_DOCS - len(needed))
    if len(rest) > room:
        rest = np.sort(rng.choice(rest, size=room, replace=False))
    return needed + rest.tolist()


def _mask(queries, positives, targets, row_of, n_rows):
    import torch

    mask = torch.zeros((len(queries), n_rows), dtype=torch.bool)
    for i, q in enumerate(queries):
        for doc in positives[q]:
            if doc in row_of and row_of[doc] != int(targets[i]):
                mask[i, row_of[doc]] = True
    return mask


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _project(new: np.ndarray, weight: np.ndarray, dim: int) -> np.ndarray:
    return _unit(_unit(new @ weight)[:, :dim])


def _mrr_at_10(queries: np.ndarray, docs: np.ndarray, rows, positives) -> float:
    scores = queries @ docs.T
    top = np.argsort(-scores, axis=1)[:, :10]
    total = 0.0
    for i, q in enumerate(rows):
        for rank, doc in enumerate(top[i], start=1):
            if doc in positives[q]:
                total += 1.0 / rank
                break
    return total / len(rows)


def _check(new_queries, new_docs, old_docs, positives, dims, old_queries) -> None:
    if new_docs.shape[0] != old_docs.shape[0]:
        raise CompatError(
            f"new_docs has {new_docs.shape[0]} rows and old_docs {old_docs.shape[0]}: expected the same documents "
            f"embedded by both models, row for row"
        )
    if len(positives) != len(new_queries):
        raise CompatError(
            f"positives has {len(positives)} entries for {len(new_queries)} queries: expected one each"
        )
    if old_queries is not None and old_queries.shape != (len(new_queries), old_docs.shape[1]):
        raise CompatError(
            f"old_queries has shape {old_queries.shape}, expected {(len(new_queries), old_docs.shape[1])}"
        )
    if not dims or max(dims) > old_docs.shape[1] or min(dims) < 1:
        raise CompatError(
            f"dims {dims}: expected the old version's Matryoshka dims, each in 1..{old_docs.shape[1]}"
        )
    bad = [doc for docs in positives for doc in docs if not 0 <= doc < len(old_docs)]
    if bad:
        raise CompatError(f"positives name document rows {bad[:5]} outside 0..{len(old_docs) - 1}")
    if not any(positives):
        raise CompatError("no query has a positive document: nothing to fit the backward map on")


def add_backward_map(model, weight: np.ndarray):
    """A new SentenceTransformer: the model's modules, then Dense(B) and Normalize, so that its (and its ONNX
    export's) output is the compatible embedding in the old space; the model's prompts are kept."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense
    from sentence_transformers.sentence_transformer.modules import Normalize

    dense = Dense(
        weight.shape[0],
        weight.shape[1],
        bias=False,
        activation_function=torch.nn.Identity(),
        init_weight=torch.tensor(weight.T, dtype=torch.float32),  # torch's Linear stores (out, in)
    )
    modules = list(model._modules.values())
    if not isinstance(modules[-1], Normalize):  # B was fitted on the export's output, which is unit length
        modules.append(Normalize())
    modules += [dense, Normalize()]
    compatible = SentenceTransformer(modules=modules, device=str(model.device))
    compatible.prompts = dict(getattr(model, "prompts", None) or {})
    compatible.default_prompt_name = getattr(model, "default_prompt_name", None)
    return compatible
