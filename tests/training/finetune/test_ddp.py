"""Data-parallel training through torchrun, unchanged: 2 CPU processes with the gloo backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_torchrun_two_processes_train_one_run(tmp_path, tiny_model_dir, pairs_csv):
    config = tmp_path / "ddp.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "base_model": str(tiny_model_dir),
                "data": {"path": str(pairs_csv)},
                "output_dir": str(tmp_path / "runs"),
                "max_steps": 4,
                "batch_size": 8,
                "dev_fraction": 0.0,
                "logging_steps": 1,
            }
        )
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "gates.cli",
            "train",
            str(config),
            "--skip-data-gate",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1, f"both ranks must share one run directory, got {runs}"
    run = runs[0]
    assert (run / "model" / "model.safetensors").is_file()
    summary = json.loads((run / "train" / "summary.json").read_text())
    assert summary["steps"] == 4
    # 160 rows, 8 per process x 2 processes: 4 steps cover 64 rows = 0.4 epoch (0.2 on one process).
    epochs = [
        json.loads(line)["epoch"] for line in (run / "train" / "train_log.jsonl").read_text().splitlines()
    ]
    assert max(epochs) == pytest.approx(4 * 16 / 160, abs=0.05)
