"""A post-hoc Matryoshka rotation: an orthogonal matrix, fitted by PCA on the training side's embeddings, that
orders the embedding axes by variance before truncation.

Why: truncating to the first k dims keeps whatever those dims hold; after this rotation they hold the k
directions of largest variance of the domain's embeddings. A rotation changes no cosine similarity at the full
dim, so full-dim quality is untouched, while small dims gain a lot (measured on SciFact: NDCG@10 at 64d from 92%
to 96% of 384d after MatryoshkaLoss training; benchmarks/results/sweep_h100_scifact.jsonl). It is fitted without
labels (texts only) and kept only when it improves the held-out dev set's mean NDCG@10 over the Matryoshka dims,
so a domain where it does not help does not get it. Stored as a bias-free linear `Dense` layer before
`Normalize`, so it is part of the saved model and of every exported ONNX graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_FIT_TEXTS = 4000  # PCA of a 384-dim space is well determined by a few thousand samples


@dataclass(frozen=True)
class RotationDecision:
    applied: bool
    reason: str
    dev_before: dict[str, float]
    dev_after: dict[str, float]
    fit_texts: int

    def to_dict(self) -> dict:
        return dict(vars(self))


def fit_rotation(embeddings: np.ndarray) -> np.ndarray:
    """Rows are the principal axes (uncentered: a pure rotation, so cosine similarity is preserved)."""
    _, _, vt = np.linalg.svd(np.asarray(embeddings, dtype=np.float64), full_matrices=False)
    if vt.shape[0] != embeddings.shape[1]:
        raise ValueError(f"need at least {embeddings.shape[1]} texts to fit a rotation, got {embeddings.shape[0]}")
    return vt.astype(np.float32)


def add_rotation(model, rotation: np.ndarray):
    """A new SentenceTransformer with the rotation inserted before its final Normalize (or at the end)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense
    from sentence_transformers.sentence_transformer.modules import Normalize

    dim = rotation.shape[0]
    dense = Dense(dim, dim, bias=False, activation_function=torch.nn.Identity(),
                  init_weight=torch.tensor(rotation, dtype=torch.float32))
    modules = list(model._modules.values())
    position = len(modules) - 1 if isinstance(modules[-1], Normalize) else len(modules)
    modules.insert(position, dense)
    return SentenceTransformer(modules=modules, device=str(model.device))


def choose_rotation(model, evaluator, fit_texts: list[str], mode: str = "auto", seed: int = 0,
                    batch_size: int = 64) -> tuple[object, RotationDecision]:
    """Fit on `fit_texts`; apply if mode == "on", or if mode == "auto" and the dev mean NDCG@10 improves."""
    if mode == "off":
        return model, RotationDecision(False, "rotation: off", {}, {}, 0)
    rng = np.random.default_rng(seed)
    texts = list(dict.fromkeys(fit_texts))
    if len(texts) > MAX_FIT_TEXTS:
        texts = [texts[i] for i in sorted(rng.choice(len(texts), MAX_FIT_TEXTS, replace=False))]
    dim = model.get_embedding_dimension()
    if len(texts) < dim:
        return model, RotationDecision(False, f"only {len(texts)} texts to fit a {dim}-dim rotation", {}, {},
                                       len(texts))
    embeddings = model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    rotation = fit_rotation(embeddings)
    if evaluator is None:
        applied = mode == "on"
        why = "rotation: on" if applied else "no dev set to confirm the rotation helps: not applied"
        return (add_rotation(model, rotation) if applied else model), RotationDecision(applied, why, {}, {},
                                                                                       len(texts))
    q, d = evaluator.encode(model)
    before = evaluator.scores(q, d)
    after = evaluator.scores(q @ rotation.T, d @ rotation.T)
    gain = after["ndcg@10_mean"] - before["ndcg@10_mean"]
    applied = mode == "on" or gain > 0
    reason = (f"dev mean NDCG@10 over dims {before['ndcg@10_mean']:.4f} -> {after['ndcg@10_mean']:.4f} "
              f"({gain:+.4f}): {'applied' if applied else 'not applied'}")
    rounded = lambda m: {k: round(v, 5) for k, v in m.items()}  # noqa: E731
    return (add_rotation(model, rotation) if applied else model), RotationDecision(
        applied, reason, rounded(before), rounded(after), len(texts))
