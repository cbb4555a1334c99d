"""Asking the pipeline for a GPU that is not there: one line, exit 2, no run directory written."""

from __future__ import annotations

import yaml

from gates.cli import main
from tests.synthetic import write_lay_jargon_beir


def test_cuda_where_there_is_none_stops_before_anything_is_written(tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    data = write_lay_jargon_beir(tmp_path / "data", train_queries=10, test_queries=10)
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"path": str(data), "type": "ir"},
                "output_dir": str(tmp_path / "runs"),
                "promotion": {"registry": str(tmp_path / "registry")},
            }
        )
    )
    assert main(["pipeline", str(config), "--set", "device=cuda:0", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: device 'cuda:0': torch ") and "sees no CUDA GPU" in err and "\n" not in err
    assert not (tmp_path / "runs").exists()

    monkeypatch.setenv("EMBEDGATE_DEVICE", "cuda")
    assert main(["pipeline", str(config), "--quiet"]) == 2
    assert "device 'cuda'" in capsys.readouterr().err
