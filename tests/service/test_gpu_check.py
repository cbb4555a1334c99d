"""benchmarks/gpu_check.py, the GPU check of issue 26, run end to end on the CPU provider so it cannot rot until a
GPU machine runs it: export with fp16, fp16 parity, in-process speed, three real services (fp32, fp16, fp32 in split
mode with one HTTP worker), the table."""

from __future__ import annotations

import json
import sys

import pytest

from tests.service.serving import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import gpu_check  # noqa: E402


def test_the_gpu_check_runs_on_the_cpu_provider(tiny_model_dir, tmp_path, capsys):
    argv = ["--device", "cpu", "--model-dir", str(tiny_model_dir), "--dims", "32,16", "--serving-dim", "16"]
    argv += ["--connections", "1,4", "--seconds", "1", "--load", "python", "--workdir", str(tmp_path)]
    argv += ["--cpu-sentences-per-s", "1", "--port", "0", "--http-workers", "1"]

    assert gpu_check.main(argv) == 0

    (written,) = tmp_path.glob("gpu-check-*.json")
    results = json.loads(written.read_text())
    assert results["fp16_parity"]["min_cosine"] >= gpu_check.MIN_FP16_COSINE  # the tiny model keeps parity
    for precision in gpu_check.PRECISIONS:
        assert results["in_process"][precision]["batched_sentences_per_s"] > 0
    assert set(results["served"]) == {*gpu_check.PRECISIONS, "fp32 split h1"}
    for served in results["served"].values():
        assert set(served) == {"c1", "c4", "batch32"}
        assert all(run["requests"] > 0 and run["errors"] == 0 for run in served.values())
        # 32 sentences per request: sentences/s is 32x the request rate
        assert served["batch32"]["sentences_per_s"] == pytest.approx(32 * served["batch32"]["requests_per_s"])
    printed = capsys.readouterr().out
    assert "fp16 parity >= 0.999" in printed and "fp32 served c4 >= 0.5x in-process batched" in printed
    assert "served c4 >= 10x the CPU figure" in printed
    assert "fp32 split h1 served c4 >= 0.5x in-process batched" in printed


def test_cuda_without_its_provider_is_one_line_saying_what_to_install(tmp_path, capsys):
    # This environment's onnxruntime is the CPU build: asking for CUDA stops before any work, exit 2.
    assert gpu_check.main(["--device", "cuda", "--workdir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "has no CUDA provider" in error and "onnxruntime-gpu" in error and "--device cpu" in error
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--device", "tpu"], "--device: expected cuda, cuda:N or cpu, got 'tpu'"),
        (["--dims", "384,128", "--serving-dim", "64"], "--serving-dim 64 is not among --dims 384,128"),
        (["--connections", "1,many"], "--dims and --connections take comma-separated integers"),
        (["--http-workers", "0"], "--http-workers must be >= 1, got 0"),
    ],
)
def test_bad_arguments_say_what_was_expected(argv, expected, tmp_path, capsys):
    try:
        code = gpu_check.main([*argv, "--workdir", str(tmp_path)])
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    assert code == 2
    assert expected in capsys.readouterr().err
