"""`embedgate evaluate`, `gate`, `promote`, `rollback`, `history` from the command line."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from gates.cli import main
from tests.synthetic import write_lay_jargon_beir


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory, tiny_model_dir):
    """A run whose 'fine-tuned' model is the base model itself: evaluation must find no improvement."""
    from training.export.export_run import export_run

    root = tmp_path_factory.mktemp("cli-eval")
    data = write_lay_jargon_beir(root / "data", train_queries=40, test_queries=40)
    run = root / "runs" / "same-as-base"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        yaml.safe_dump({"base_model": str(tiny_model_dir), "data": {"path": str(data)}})
    )
    shutil.copytree(tiny_model_dir, run / "model")
    export_run(run / "model", run / "onnx", dims=[32, 16])
    return root, run, data


def test_evaluate_then_gate_blocks_a_model_no_better_than_base(untrained_run, capsys):
    root, run, data = untrained_run
    assert main(["evaluate", str(run), "--data", str(data), "--registry", str(root / "registry")]) == 0
    out = capsys.readouterr().out
    assert "| candidate | onnx-fp32 | 32 |" in out and "| baseline | onnx-fp32 | 32 |" in out
    candidate = json.loads((run / "eval" / "candidate.json").read_text())
    baseline = json.loads((run / "eval" / "baseline.json").read_text())
    fp32 = lambda r, d: next(e for e in r["retrieval"] if e["backend"] == "onnx-fp32" and e["dim"] == d)  # noqa: E731
    assert fp32(candidate, 32)["mean"]["ndcg@10"] == pytest.approx(
        fp32(baseline, 32)["mean"]["ndcg@10"], abs=1e-6
    )
    assert len(fp32(candidate, 32)["per_query"]) == 40  # per-query scores kept for the paired test
    assert {e["backend"] for e in candidate["retrieval"]} == {"onnx-fp32", "onnx-int8", "torch"}
    assert (run / "eval" / "metrics_vs_dim.png").stat().st_size > 10_000
    assert main(["gate", str(run)]) == 1
    out = capsys.readouterr().out
    assert "gate FAILED" in out and "primary_improves" in out
    decision = json.loads((run / "gate" / "decision.json").read_text())
    assert decision["passed"] is False
    # Refused at promotion too, and the refusal is in the history.
    assert main(["promote", str(run), "--registry", str(root / "registry"), "--no-bento-store"]) == 1
    assert "did not pass its gate" in capsys.readouterr().err
    assert main(["history", "--registry", str(root / "registry"), "--json"]) == 0
    entries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["action"] for e in entries] == ["refused"]


def test_forced_promotion_then_rollback_and_history(untrained_run, capsys):
    root, run, _ = untrained_run
    registry = root / "registry-forced"

    def force_promote(run_dir):
        argv = ["promote", str(run_dir), "--registry", str(registry), "--force", "--reason", "drill"]
        return main([*argv, "--no-bento-store"])

    assert main(["promote", str(run), "--registry", str(registry), "--force", "--no-bento-store"]) == 2
    assert "--force needs --reason" in capsys.readouterr().err
    assert force_promote(run) == 0
    capsys.readouterr()
    # The same run again is a duplicate, refused (exit 1); a copy under another run id is a new version.
    assert force_promote(run) == 1
    assert "run same-as-base is already v0001 of this registry" in capsys.readouterr().err
    copy = run.parent / "same-as-base-again"
    shutil.copytree(run, copy)
    assert force_promote(copy) == 0
    assert "promoted same-as-base-again as v0002 (previous champion: v0001" in capsys.readouterr().out
    assert main(["rollback", "--registry", str(registry), "--reason", "drill over"]) == 0
    assert "v0001 is the champion" in capsys.readouterr().out
    assert main(["rollback", "--registry", str(registry)]) == 2
    assert "v0001 is the first champion" in capsys.readouterr().err
    assert main(["history", "--registry", str(registry)]) == 0
    table = capsys.readouterr().out
    assert table.startswith("champion: v0001") and table.count("promote") == 2 and "drill over" in table


def test_evaluate_and_gate_errors_exit_2(tmp_path, untrained_run, capsys):
    _, run, data = untrained_run
    assert main(["evaluate", str(tmp_path), "--data", str(data)]) == 2
    assert "is not an embedgate run directory" in capsys.readouterr().err
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.yaml").write_text("data: {path: x}\n")
    assert main(["gate", str(bare)]) == 2
    assert "candidate.json is missing: evaluate the run first" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--data", str(data), "--split", "dev"]) == 2
    assert "no qrels for split 'dev'; available splits: test, train" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--data", str(data), "--backends", "onnx-fp16"]) == 2
    assert (
        "backends: expected one or more of onnx-fp32, onnx-int8, torch, got ['onnx-fp16']"
        in capsys.readouterr().err
    )


def test_evaluate_the_torch_backend_alone(tmp_path, untrained_run, capsys):
    _, run, data = untrained_run
    copy = tmp_path / "torch-only"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("eval", "gate"))
    assert (
        main(
            [
                "evaluate",
                str(copy),
                "--data",
                str(data),
                "--registry",
                str(tmp_path / "registry"),
                "--backends",
                "torch",
            ]
        )
        == 0
    )
    assert "| candidate | torch | 32 |" in capsys.readouterr().out
    candidate = json.loads((copy / "eval" / "candidate.json").read_text())
    assert {(e["backend"], e["dim"]) for e in candidate["retrieval"]} == {("torch", 32), ("torch", 16)}


def test_the_gate_records_the_champion_it_compared_against_and_promote_checks_it(
    untrained_run, tmp_path, capsys
):
    """decision.json names the champion the evaluation used (version and file fingerprint): promotion into a
    registry whose champion is another refuses with the re-gate commands."""
    from service.registry.registry import Registry

    root, run, data = untrained_run
    registry = tmp_path / "registry"
    forced = ["--registry", str(registry), "--no-bento-store", "--force", "--reason", "first version"]
    assert main(["promote", str(run), *forced]) == 0
    copy = tmp_path / "runs" / "candidate"
    shutil.copytree(run, copy)
    assert main(["evaluate", str(copy), "--data", str(data), "--registry", str(registry)]) == 0
    main(["gate", str(copy)])
    decision = json.loads((copy / "gate" / "decision.json").read_text())
    assert decision["baseline"] == "champion v0001" and decision["baseline_version"] == "v0001"
    assert decision["baseline_fingerprint"] == Registry(registry).fingerprint("v0001")
    # The untrained copy fails its gate; let it pass so that promotion gets to the baseline check.
    (copy / "gate" / "decision.json").write_text(json.dumps({**decision, "passed": True}))
    capsys.readouterr()
    other = tmp_path / "other-registry"  # its champion is also v0001, but another model
    shutil.copytree(run, tmp_path / "runs" / "other")
    (tmp_path / "runs" / "other" / "onnx" / "embedder.json").write_text("{}")
    assert main(["promote", str(tmp_path / "runs" / "other"), "--registry", str(other), *forced[2:]]) == 0
    capsys.readouterr()
    assert main(["promote", str(copy), "--registry", str(other), "--no-bento-store"]) == 1
    assert "whose files differ from" in capsys.readouterr().err
