"""Loss choice per dataset type, optionally wrapped in MatryoshkaLoss.

| data            | default loss                          | input columns                              |
|-----------------|---------------------------------------|--------------------------------------------|
| pairs, ir       | MultipleNegativesRankingLoss (MNRL)   | (anchor, positive)                         |
| hard_negatives  | MNRL                                  | (anchor, positive, negative_1..n)          |
| triplets        | MNRL (or TripletLoss)                 | (anchor, positive, negative)               |
| nli             | MNRL on (premise, entailed, contradicted) triplets built from the labels |  |
| sts             | CoSENTLoss                            | (sentence1, sentence2, score)              |

`cached=True` (or a large set) switches MNRL to CachedMultipleNegativesRankingLoss (GradCache): the batch can be
far larger than what fits in memory, at ~20% more compute, and more in-batch negatives help retrieval.
"""

from __future__ import annotations

from dataclasses import dataclass

from training.data.formats import DatasetType
from training.errors import ConfigError

IN_BATCH_LOSSES = {"mnrl", "cached_mnrl"}
ALLOWED = {
    DatasetType.PAIRS: {"mnrl", "cached_mnrl"},
    DatasetType.IR: {"mnrl", "cached_mnrl"},
    DatasetType.HARD_NEGATIVES: {"mnrl", "cached_mnrl", "triplet"},
    DatasetType.TRIPLETS: {"mnrl", "cached_mnrl", "triplet"},
    DatasetType.NLI: {"mnrl", "cached_mnrl", "triplet"},
    DatasetType.STS: {"cosent"},
}
# Above this many training rows, MNRL becomes CachedMNRL by default (bigger effective batches pay off).
CACHED_THRESHOLD = 50_000


@dataclass(frozen=True)
class LossChoice:
    name: str  # mnrl | cached_mnrl | cosent | triplet
    reason: str

    @property
    def uses_in_batch_negatives(self) -> bool:
        return self.name in IN_BATCH_LOSSES


def choose_loss(
    dataset_type: DatasetType, requested: str = "auto", cached: bool = False, n_rows: int = 0
) -> LossChoice:
    """Pick the loss for a dataset type, or check the one the config asks for.

    Args:
        dataset_type: the detected or configured dataset type.
        requested: `auto`, or a loss name the config asks for (mnrl, cached_mnrl, cosent, triplet).
        cached: ask for CachedMultipleNegativesRankingLoss (GradCache: Gao et al., "Scaling Deep Contrastive
            Learning Batch Size under Memory Limited Setup", 2021).
        n_rows: training rows; at CACHED_THRESHOLD or more, `auto` picks the cached loss.

    Returns:
        The loss name and why it was chosen (recorded in the run's defaults.json).

    Raises:
        ConfigError: the requested loss does not fit the data, or `cached` with a loss that has no in-batch
            negatives.
    """
    allowed = ALLOWED[dataset_type]
    if requested != "auto":
        if requested not in allowed:
            raise ConfigError(
                f"loss {requested!r} does not fit {dataset_type.value} data; allowed: {', '.join(sorted(allowed))} "
                f"(set loss: auto to let embedgate choose)"
            )
        if cached and requested == "mnrl":
            return LossChoice("cached_mnrl", "cached: true")
        if cached and requested not in IN_BATCH_LOSSES:
            raise ConfigError(
                f"cached: true needs an in-batch-negatives loss (mnrl or cached_mnrl), got loss "
                f"{requested!r}; drop cached, or use loss: mnrl"
            )
        return LossChoice(requested, "set in config")
    if dataset_type is DatasetType.STS:
        return LossChoice("cosent", "STS scores: CoSENT learns the ranking of similarity scores")
    if cached or n_rows >= CACHED_THRESHOLD:
        why = (
            "cached: true" if cached else f"{n_rows} rows >= {CACHED_THRESHOLD}: large batches via GradCache"
        )
        return LossChoice("cached_mnrl", why)
    return LossChoice("mnrl", "in-batch negatives (plus any hard negatives) for retrieval")


def build_loss(
    model,
    choice: LossChoice,
    matryoshka_dims: list[int] | None = None,
    matryoshka_weights: list[float] | None = None,
    mini_batch_size: int = 32,
):
    """Instantiate the sentence-transformers loss; wrap it in MatryoshkaLoss when dims are given.

    MNRL is the in-batch-negatives ranking loss of Henderson et al., "Efficient Natural Language Response
    Suggestion for Smart Reply" (2017); CoSENT ranks pairs by their similarity scores (Su, 2022); MatryoshkaLoss
    applies the inner loss to each prefix of the embedding (Kusupati et al., "Matryoshka Representation
    Learning", NeurIPS 2022), so a truncated vector is itself a good embedding.

    Args:
        model: the SentenceTransformer being trained.
        choice: from `choose_loss`.
        matryoshka_dims: prefix sizes to train (None: no Matryoshka wrapper).
        matryoshka_weights: one weight per dim (None: equal weights).
        mini_batch_size: CachedMNRL's per-forward size (memory bound).

    Returns:
        A sentence-transformers loss module.

    Raises:
        ConfigError: a Matryoshka dim larger than the model's embedding dim.
    """
    from sentence_transformers.sentence_transformer import losses

    if choice.name == "mnrl":
        inner = losses.MultipleNegativesRankingLoss(model)
    elif choice.name == "cached_mnrl":
        inner = losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=mini_batch_size)
    elif choice.name == "cosent":
        inner = losses.CoSENTLoss(model)
    elif choice.name == "triplet":
        # Cosine distance with a margin on the cosine scale (the Euclidean default of 5 never binds for unit vectors).
        inner = losses.TripletLoss(
            model, distance_metric=losses.TripletDistanceMetric.COSINE, triplet_margin=0.3
        )
    else:  # guarded by choose_loss
        raise ConfigError(f"unknown loss {choice.name!r}")
    if not matryoshka_dims:
        return inner
    model_dim = model.get_embedding_dimension()
    too_big = [d for d in matryoshka_dims if d > model_dim]
    if too_big:
        raise ConfigError(
            f"matryoshka_dims {too_big} exceed the model's embedding dim {model_dim}; allowed: 1..{model_dim}"
        )
    return losses.MatryoshkaLoss(
        model, inner, matryoshka_dims=matryoshka_dims, matryoshka_weights=matryoshka_weights
    )
