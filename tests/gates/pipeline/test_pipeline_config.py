"""The pipeline config: stage sections split off the training fields, each validated with a clear error."""

from __future__ import annotations

import json

import pytest

from gates.pipeline.config import load_pipeline_config
from training.errors import ConfigError


@pytest.mark.parametrize("value", ["strict", "[1, 2]", "3"])
def test_a_section_that_is_not_a_mapping_is_a_config_error(tmp_path, value):
    config = tmp_path / "pipeline.yaml"
    config.write_text(f"data: {{path: data}}\ngate: {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"pipeline.yaml: section 'gate' must be a mapping of policy, got"):
        load_pipeline_config(config)


def test_sections_and_overrides(tmp_path):
    config = tmp_path / "pipeline.yaml"
    config.write_text("data: {path: data}\nexport: {int8: false}\n", encoding="utf-8")
    loaded = load_pipeline_config(config, {"evaluation.split": "dev", "epochs": 2})
    assert loaded.export.int8 is False and loaded.evaluation.split == "dev" and loaded.train.epochs == 2


def test_a_training_side_error_is_recorded_like_any_other(tmp_path):
    from gates.pipeline.run import run_pipeline

    config = load_pipeline_config(
        None,
        {"data.path": str(tmp_path / "missing.csv"), "output_dir": str(tmp_path / "runs"), "run_id": "r1"},
    )
    outcome = run_pipeline(config)
    assert (outcome.status, outcome.exit_code) == (
        "error",
        2,
    ) and "missing.csv: file not found" in outcome.reason
    recorded = json.loads((tmp_path / "runs" / "r1" / "pipeline.json").read_text())
    assert recorded["reason"] == outcome.reason and recorded["stages"][0]["status"] == "error"


def test_promotion_mode_and_webhook(tmp_path):
    config = tmp_path / "pipeline.yaml"
    config.write_text("data: {path: data}\npromotion: {mode: staged, webhook: 'http://127.0.0.1:9/hook'}\n")
    loaded = load_pipeline_config(config)
    assert (loaded.promotion.mode, loaded.promotion.webhook) == ("staged", "http://127.0.0.1:9/hook")
    assert (
        load_pipeline_config(None, {"data.path": "x"}).promotion.mode == "immediate"
    )  # the demo's behaviour
    config.write_text("data: {path: data}\npromotion: {mode: later}\n")
    with pytest.raises(ConfigError, match=r"promotion\.mode.*'immediate' or 'staged'"):
        load_pipeline_config(config)


def test_a_webhook_without_its_secret_stops_the_pipeline_before_any_stage(tmp_path, monkeypatch):
    from gates.pipeline.run import run_pipeline

    monkeypatch.delenv("EMBEDGATE_WEBHOOK_SECRET", raising=False)
    config = load_pipeline_config(
        None,
        {
            "data.path": str(tmp_path / "missing.csv"),
            "run_id": "r1",
            "output_dir": str(tmp_path / "runs"),
            "promotion.webhook": "http://127.0.0.1:9/hook",
        },
    )
    outcome = run_pipeline(config)
    assert outcome.exit_code == 2 and "EMBEDGATE_WEBHOOK_SECRET is empty" in outcome.reason
    assert outcome.stages == []  # refused before the data gate, not after training


def test_export_fp16_setting_follows_the_device_when_auto():
    from gates.pipeline.config import load_pipeline_config
    from training.errors import ConfigError

    assert load_pipeline_config(None, {"data.path": "x"}).export.fp16 == "auto"
    assert load_pipeline_config(None, {"data.path": "x"}).export.wants_fp16("cpu") is False
    assert (
        load_pipeline_config(None, {"data.path": "x", "export.fp16": True}).export.wants_fp16("cpu") is True
    )
    assert (
        load_pipeline_config(None, {"data.path": "x", "export.fp16": False}).export.wants_fp16("auto")
        is False
    )
    with pytest.raises(ConfigError, match="fp16"):
        load_pipeline_config(None, {"data.path": "x", "export.fp16": "sometimes"})


def test_gradient_checkpointing_is_on_for_cpu_training_unless_the_config_says_otherwise(tmp_path):
    config = load_pipeline_config(None, {"data.path": "x", "device": "cpu"})
    # auto on the CPU: on where RAM is short (a CI runner), off where the step's full peak fits (its speed back)
    assert config.memory.wants_checkpointing(config.train.device, total_ram_gib=7.0) is True
    assert config.memory.wants_checkpointing(config.train.device, total_ram_gib=24.0) is False
    off = load_pipeline_config(None, {"data.path": "x", "memory.gradient_checkpointing": False})
    assert off.memory.wants_checkpointing("cpu") is False
    path = tmp_path / "pipeline.yaml"
    path.write_text("data: {path: data}\nmemory: {gradient_checkpointing: sometimes}\n")
    with pytest.raises(ConfigError, match=r"memory\.gradient_checkpointing.*sometimes"):
        load_pipeline_config(path)
