"""`embedgate train --base-model`: a folder or a Hub id; a Hub id that cannot be had is exit 2 with one line."""

from __future__ import annotations

import yaml

from gates.cli import main


def test_train_takes_the_base_model_flag(tmp_path, tiny_model_dir, pairs_csv, capsys):
    code = main(
        [
            "train",
            "--data",
            str(pairs_csv),
            "--base-model",
            str(tiny_model_dir),
            "--output-dir",
            str(tmp_path / "runs"),
            "--run-id",
            "flag",
            "--set",
            "max_steps=1",
            "--set",
            "dev_fraction=0",
            "--set",
            "mining.strategy=none",
        ]
    )
    assert code == 0, capsys.readouterr()
    recorded = yaml.safe_load((tmp_path / "runs" / "flag" / "config.yaml").read_text())
    assert recorded["base_model"] == str(tiny_model_dir)


def test_an_uncached_hub_model_offline_is_exit_2_with_one_line(tmp_path, pairs_csv, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    code = main(
        [
            "train",
            "--data",
            str(pairs_csv),
            "--base-model",
            "BAAI/bge-small-en-v1.5",
            "--output-dir",
            str(tmp_path / "runs"),
            "--run-id",
            "hub",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "'BAAI/bge-small-en-v1.5': not a local folder and not in the Hugging Face cache" in err
