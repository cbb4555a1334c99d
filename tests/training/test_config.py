from __future__ import annotations

import pytest

from training.config import load_config
from training.errors import ConfigError
from training.finetune.defaults import check_dims, matryoshka_dims_for, resolve


def test_flags_only_config_with_defaults(tmp_path):
    cfg = load_config(None, {"data.path": str(tmp_path)})
    assert cfg.loss == "auto" and cfg.matryoshka and cfg.warmup_ratio == 0.1
    assert cfg.epochs is None and cfg.batch_size is None  # resolved from the data later


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"epochs": -1}, r"field 'epochs': got -1; Input should be greater than 0"),
        ({"batch_size": 1}, r"field 'batch_size': got 1; Input should be greater than or equal to 2"),
        (
            {"learning_rate": 0.5},
            r"field 'learning_rate': got 0.5; Input should be less than or equal to 0.01",
        ),
        ({"loss": "cosine"}, r"field 'loss': got 'cosine'; Input should be 'auto', 'mnrl'"),
        ({"matryoshka_dims": [128, 0]}, r"field 'matryoshka_dims': got \[128, 0\]; dims must be positive"),
        ({"matryoshka_dims": [64, 64]}, r"dims must be unique, got \[64, 64\]"),
        (
            {"mining.range_min": 60, "mining.range_max": 50},
            r"range_max \(50\) must be greater than range_min \(60\)",
        ),
        (
            {"mining.relative_margin": 1.5},
            r"field 'mining.relative_margin': got 1.5; Input should be less than 1",
        ),
        ({"mining.strategy": "domain_confusion"}, r"needs domain_confusion_path"),
        ({"run_id": "../escape"}, r"field 'run_id': got '../escape'"),
        ({"bogus": 1}, r"unknown field 'bogus' \(allowed: base_model, data,"),
    ],
)
def test_invalid_values_name_field_value_and_range(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, {"data.path": str(tmp_path), **overrides})


def test_missing_data_section_is_named():
    with pytest.raises(ConfigError, match=r"field 'data' is required"):
        load_config(None, {})


def test_yaml_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  path: x\nepochs: [1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: not valid YAML"):
        load_config(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"expected a YAML mapping of config fields, got list"):
        load_config(listing)
    with pytest.raises(ConfigError, match=r"config file .*missing.yaml not found"):
        load_config(tmp_path / "missing.yaml")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("run_id: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml: not UTF-8 text \(byte 11\)"):
        load_config(latin1)


def test_yaml_relative_data_path_resolves_next_to_the_file(tmp_path):
    (tmp_path / "data").mkdir()
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("data:\n  path: data\nepochs: 2\n")
    cfg = load_config(cfg_file)
    assert cfg.data.path == tmp_path / "data" and cfg.epochs == 2


def test_matryoshka_dims_default_and_bounds():
    assert matryoshka_dims_for(384) == [384, 256, 128, 64]
    assert matryoshka_dims_for(768) == [768, 512, 256, 128, 64]
    assert matryoshka_dims_for(32) == [32]
    with pytest.raises(ConfigError, match=r"matryoshka_dims \[512\] exceed the model's embedding dim 384"):
        check_dims([512, 256], 384)


def test_resolve_follows_the_data(tmp_path):
    cfg = load_config(None, {"data.path": str(tmp_path)})
    small = resolve(cfg, n_rows=900, model_dim=384)
    assert small.config.matryoshka_dims == [384, 256, 128, 64]
    assert small.config.batch_size >= 32 and 900 // small.config.batch_size >= 8
    assert small.config.epochs is not None and small.config.learning_rate is not None
    assert set(small.reasons) >= {"epochs", "batch_size", "learning_rate", "matryoshka_dims", "warmup_ratio"}
    big = resolve(cfg, n_rows=100_000, model_dim=384)
    assert big.config.batch_size >= small.config.batch_size
    with pytest.raises(ConfigError, match="training set is empty"):
        resolve(cfg, n_rows=0, model_dim=384)
