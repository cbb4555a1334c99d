"""`embedgate export` through `gates.cli.main`: exit 0 with a summary, 2 with one line for every bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gates.cli import main


@pytest.fixture()
def run_dir(tiny_model_dir, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "model")
    return run


def test_export_of_a_run_dir_writes_run_onnx_and_prints_parity(run_dir, capsys):
    assert main(["export", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    assert f"-> {run_dir / 'onnx'}" in printed and "(dims [32])" in printed
    lines = {line.split()[0]: line.split() for line in printed.splitlines()[2:]}
    assert set(lines) == {"d32/model.onnx", "d32/model_int8.onnx"}
    assert float(lines["d32/model.onnx"][2]) >= 0.9999  # min cosine column
    assert json.loads((run_dir / "onnx" / "embedder.json").read_text())["dims"] == [32]


def test_model_and_out_options_with_dims_and_no_int8(tiny_model_dir, tmp_path):
    out = tmp_path / "exported"
    assert (
        main(["export", "--model", str(tiny_model_dir), "--out", str(out), "--dims", "16,32", "--no-int8"])
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "d16",
        "d32",
        "embedder.json",
        "export.json",
        "tokenizer",
    ]
    assert [p.name for p in (out / "d16").iterdir()] == ["model.onnx"]


def test_existing_export_exits_2_unless_overwrite(run_dir, capsys):
    (run_dir / "onnx").mkdir()
    assert main(["export", str(run_dir), "--no-int8"]) == 2
    assert "already exists; exports are immutable" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--no-int8", "--overwrite"]) == 0
    assert (run_dir / "onnx" / "d32" / "model.onnx").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dims", "32,abc"], "expected comma-separated integers like 384,256,128,64, got '32,abc'"),
        (["--dims", "64,32"], "[64] outside the allowed range 1..32"),
        (["--opset", "9"], "opset: expected an integer in 14..20, got 9"),
    ],
)
def test_bad_options_exit_2_with_the_reason(run_dir, capsys, args, message):
    assert main(["export", str(run_dir), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (run_dir / "onnx").exists()


def test_missing_paths_exit_2(tmp_path, capsys):
    assert main(["export"]) == 2
    assert "expected RUN_DIR, or both --model PATH and --out PATH" in capsys.readouterr().err
    assert main(["export", str(tmp_path)]) == 2
    assert "no model/ folder in this run directory" in capsys.readouterr().err


def test_fp16_flag_adds_the_fp16_graphs_and_says_what_their_cosine_is_to(run_dir, capsys):
    assert main(["export", str(run_dir), "--no-int8", "--fp16"]) == 0
    printed = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in printed.splitlines() if line.startswith("d32/")}
    assert set(rows) == {"d32/model.onnx", "d32/model_fp16.onnx"}
    assert float(rows["d32/model_fp16.onnx"][2]) >= 0.999
    assert "fp16 rows: cosine to the fp32 graph" in printed
    assert "fp16" in json.loads((run_dir / "onnx" / "embedder.json").read_text())["precisions"]
