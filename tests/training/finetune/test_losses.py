from __future__ import annotations

import random

import pytest

from tests.synthetic import make_pairs, write_csv
from training.config import load_config
from training.data.formats import DatasetType
from training.errors import ConfigError
from training.finetune.losses import CACHED_THRESHOLD, build_loss, choose_loss
from training.finetune.train import train
from training.finetune.train_log import read_log


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (DatasetType.PAIRS, "mnrl"),
        (DatasetType.IR, "mnrl"),
        (DatasetType.HARD_NEGATIVES, "mnrl"),
        (DatasetType.TRIPLETS, "mnrl"),
        (DatasetType.NLI, "mnrl"),
        (DatasetType.STS, "cosent"),
    ],
)
def test_auto_loss_per_type(dtype, expected):
    assert choose_loss(dtype).name == expected


def test_cached_for_large_sets_or_on_request():
    assert choose_loss(DatasetType.PAIRS, n_rows=CACHED_THRESHOLD).name == "cached_mnrl"
    assert choose_loss(DatasetType.PAIRS, cached=True).name == "cached_mnrl"
    assert choose_loss(DatasetType.PAIRS, "mnrl", cached=True).name == "cached_mnrl"
    assert choose_loss(DatasetType.TRIPLETS, "triplet").name == "triplet"


def test_loss_that_does_not_fit_the_data_is_refused():
    with pytest.raises(
        ConfigError, match=r"loss 'cosent' does not fit pairs data; allowed: cached_mnrl, mnrl"
    ):
        choose_loss(DatasetType.PAIRS, "cosent")
    with pytest.raises(ConfigError, match=r"loss 'mnrl' does not fit sts data; allowed: cosent"):
        choose_loss(DatasetType.STS, "mnrl")


def test_matryoshka_dim_above_model_dim_is_an_error(tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    with pytest.raises(ConfigError, match=r"matryoshka_dims \[64\] exceed the model's embedding dim 32"):
        build_loss(model, choose_loss(DatasetType.PAIRS), matryoshka_dims=[64, 16])
    wrapped = build_loss(model, choose_loss(DatasetType.PAIRS), matryoshka_dims=[32, 16, 8])
    assert type(wrapped).__name__ == "MatryoshkaLoss" and tuple(wrapped.matryoshka_dims) == (32, 16, 8)


def _sts_rows(n=160, seed=0):
    rng = random.Random(seed)
    rows = []
    for i, (a, p) in enumerate(make_pairs(n, seed)):
        other = make_pairs(n, seed + 1)[(i * 7 + 3) % n][1]  # always another topic
        rows.append((a, p, round(rng.uniform(3.5, 5.0), 2)))
        rows.append((a, other, round(rng.uniform(0.0, 1.5), 2)))
    return rows


def _triplet_rows(n=160):
    pairs = make_pairs(n)
    return [(a, p, pairs[(i + 3) % n][1]) for i, (a, p) in enumerate(pairs)]


@pytest.mark.parametrize(
    ("name", "header", "rows", "extra", "expected_loss"),
    [
        ("mnrl", ["anchor", "positive"], make_pairs(160), {}, "mnrl"),
        (
            "cached",
            ["anchor", "positive"],
            make_pairs(160),
            {"cached": True, "mini_batch_size": 8},
            "cached_mnrl",
        ),
        ("cosent", ["sentence1", "sentence2", "score"], _sts_rows(), {}, "cosent"),
        ("triplet", ["anchor", "positive", "negative"], _triplet_rows(), {"loss": "triplet"}, "triplet"),
    ],
)
def test_each_loss_trains_and_its_loss_decreases(
    tmp_path, tiny_model_dir, name, header, rows, extra, expected_loss
):
    data = write_csv(tmp_path / f"{name}.csv", header, rows)
    cfg = load_config(
        None,
        {
            "base_model": str(tiny_model_dir),
            "data.path": str(data),
            "output_dir": str(tmp_path / "runs"),
            "batch_size": 16,
            "learning_rate": 1e-3,
            "epochs": 3,
            "warmup_ratio": 0.0,
            "logging_steps": 1,
            "dev_fraction": 0.0,
            "matryoshka_dims": [32, 16],
            **extra,
        },
    )
    result = train(cfg, progress=False)
    assert result.loss == expected_loss
    losses = [r["loss"] for r in read_log(result.run_dir / "train" / "train_log.jsonl") if "loss" in r]
    assert len(losses) >= 20
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.9 * first, f"{name}: loss did not decrease ({first:.3f} -> {last:.3f})"
    assert (result.run_dir / "model" / "model.safetensors").is_file()
    assert not list((result.run_dir / "model").glob("*.bin"))


def test_cached_needs_an_in_batch_loss():
    with pytest.raises(
        ConfigError, match=r"cached: true needs an in-batch-negatives loss .* got loss 'triplet'"
    ):
        choose_loss(DatasetType.TRIPLETS, "triplet", cached=True)
