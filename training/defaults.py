"""Defaults chosen from the data (never from one dataset): epochs, batch size, learning rate, Matryoshka dims and
weights, evaluation cadence. `resolve()` fills every `null` field of a TrainConfig and says why, so the run's
config.yaml records the exact values used and the reasons are shown in the run report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from training.config import TrainConfig
from training.errors import ConfigError

SMALL_SET = 5_000  # rows; below this one epoch is plenty per the seed guide... unless few steps result (below)
MIN_MATRYOSHKA_DIM = 64


@dataclass(frozen=True)
class Resolved:
    config: TrainConfig
    reasons: dict[str, str] = field(default_factory=dict)


def matryoshka_dims_for(model_dim: int) -> list[int]:
    """Model dim and its halvings down to 64 (384 -> 384/256/128/64 as 384 is not a power of two: use 2/3 steps)."""
    dims = [model_dim]
    candidate = 1 << (model_dim.bit_length() - 1)  # largest power of two <= model_dim
    if candidate == model_dim:
        candidate //= 2
    while candidate >= MIN_MATRYOSHKA_DIM:
        dims.append(candidate)
        candidate //= 2
    return dims


def check_dims(dims: list[int], model_dim: int) -> None:
    too_big = [d for d in dims if d > model_dim]
    if too_big:
        raise ConfigError(f"matryoshka_dims {too_big} exceed the model's embedding dim {model_dim}; "
                          f"allowed: 1..{model_dim} (e.g. {matryoshka_dims_for(model_dim)})")


def resolve(config: TrainConfig, n_rows: int, model_dim: int) -> Resolved:
    """Fill the null fields of `config` from the training-set size and the model."""
    if n_rows <= 0:
        raise ConfigError("the training set is empty after loading; expected at least one training row")
    updates: dict = {}
    reasons: dict[str, str] = {}

    if config.matryoshka_dims is None:
        updates["matryoshka_dims"] = dims = matryoshka_dims_for(model_dim)
        reasons["matryoshka_dims"] = f"model dim {model_dim} and halvings down to {MIN_MATRYOSHKA_DIM}"
    else:
        dims = config.matryoshka_dims
        check_dims(dims, model_dim)
    if config.matryoshka and config.matryoshka_weights is None:
        updates["matryoshka_weights"] = [1.0] * len(dims)
        reasons["matryoshka_weights"] = "equal weight per dim"

    if config.batch_size is None:
        # More in-batch negatives help MNRL, but keep >= 8 optimizer steps per epoch on small sets.
        batch = 32
        while batch * 2 <= 128 and n_rows // (batch * 2) >= 8:
            batch *= 2
        updates["batch_size"] = batch
        reasons["batch_size"] = f"32 and up (cap 128) while {n_rows} rows still give >= 8 steps per epoch"
    if config.epochs is None:
        updates["epochs"] = 1.0 if n_rows < SMALL_SET else 2.0
        reasons["epochs"] = f"{'1 (small set' if n_rows < SMALL_SET else '2 (large set'}: {n_rows} rows)"
    if config.learning_rate is None:
        updates["learning_rate"] = 2e-5
        reasons["learning_rate"] = "2e-5: the sentence-transformers default for fine-tuning"
    reasons["warmup_ratio"] = f"{config.warmup_ratio:.0%} of steps"
    return Resolved(config.model_copy(update=updates), reasons)
