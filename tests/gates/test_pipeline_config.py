"""The pipeline config: stage sections split off the training fields, each validated with a clear error."""

from __future__ import annotations

import pytest

from gates.pipeline_config import load_pipeline_config
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
