from __future__ import annotations

import json

from gates.cli import main
from tests.synthetic import make_pairs, write_csv


def _train_tiny(tmp_path, tiny_model_dir, pairs_csv, run_id: str, *sets: str) -> int:
    """`embedgate train` on the tiny model for 2 steps, no dev split; `sets`: extra --set key=value options."""
    extra = [arg for item in sets for arg in ("--set", item)]
    return main(
        [
            "train",
            "--data",
            str(pairs_csv),
            "--set",
            f"base_model={tiny_model_dir}",
            "--output-dir",
            str(tmp_path / "runs"),
            "--run-id",
            run_id,
            "--set",
            "max_steps=2",
            "--set",
            "dev_fraction=0",
            *extra,
        ]
    )


def test_train_runs_data_gate_then_trains(tmp_path, tiny_model_dir, pairs_csv, capsys):
    code = _train_tiny(tmp_path, tiny_model_dir, pairs_csv, "ok")
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PASSED" in out
    run = tmp_path / "runs" / "ok"
    assert (run / "data" / "report.json").is_file() and (run / "model" / "model.safetensors").is_file()


def test_train_stops_when_the_data_gate_fails(tmp_path, tiny_model_dir, capsys):
    rows = make_pairs(40) + [("same text", "same text"), ("", "blank anchor")]
    bad = write_csv(tmp_path / "bad.csv", ["anchor", "positive"], rows)
    code = main(
        [
            "train",
            "--data",
            str(bad),
            "--set",
            f"base_model={tiny_model_dir}",
            "--output-dir",
            str(tmp_path / "runs"),
            "--run-id",
            "bad",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "data gate failed: training stopped" in captured.err
    report = json.loads((tmp_path / "runs" / "bad" / "data" / "report.json").read_text())
    assert report["passed"] is False
    assert not (tmp_path / "runs" / "bad" / "model").exists()


def test_train_config_errors_exit_2(tmp_path, capsys):
    assert main(["train"]) == 2
    assert "give a CONFIG file or --data PATH" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path), "--set", "epochs=-3"]) == 2
    assert "field 'epochs': got -3" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path), "--set", "novalue"]) == 2
    assert "--set expects key=value" in capsys.readouterr().err


def test_mine_writes_a_validated_hard_negatives_set(tmp_path, tiny_model_dir, pairs_csv, capsys):
    out = tmp_path / "mined"
    code = main(
        [
            "mine",
            str(pairs_csv),
            "--strategy",
            "bm25",
            "--num-negatives",
            "2",
            "--model",
            str(tiny_model_dir),
            "--out",
            str(out),
        ]
    )
    captured = capsys.readouterr().out
    assert code == 0, captured
    assert (out / "hard_negatives.jsonl").is_file() and (out / "data-gate" / "report.json").is_file()
    lines = (out / "hard_negatives.jsonl").read_text().splitlines()
    assert len(lines) == 160 and set(json.loads(lines[0])) == {
        "anchor",
        "positive",
        "negative_1",
        "negative_2",
    }
    assert main(["mine", str(pairs_csv), "--model", str(tiny_model_dir), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_mine_leakage_against_eval_fails(tmp_path, tiny_model_dir, pairs_csv):
    rows = make_pairs(160)[:5]
    eval_csv = write_csv(tmp_path / "eval.csv", ["anchor", "positive"], rows)
    code = main(
        [
            "mine",
            str(pairs_csv),
            "--strategy",
            "random",
            "--model",
            str(tiny_model_dir),
            "--out",
            str(tmp_path / "m"),
            "--eval",
            str(eval_csv),
        ]
    )
    assert code == 1


def test_mine_contradiction_needs_nli(tmp_path, tiny_model_dir, pairs_csv, capsys):
    assert (
        main(
            [
                "mine",
                str(pairs_csv),
                "--strategy",
                "contradiction",
                "--model",
                str(tiny_model_dir),
                "--out",
                str(tmp_path / "m"),
            ]
        )
        == 2
    )
    assert "strategy contradiction needs NLI data" in capsys.readouterr().err


def test_train_runs_the_data_gate_on_the_mined_rows(tmp_path, tiny_model_dir, pairs_csv, capsys):
    code = _train_tiny(tmp_path, tiny_model_dir, pairs_csv, "mined", "mining.strategy=random")
    assert code == 0, capsys.readouterr()
    report = json.loads((tmp_path / "runs" / "mined" / "mined" / "data-gate" / "report.json").read_text())
    assert report["passed"] is True and report["dataset"]["type"] == "hard_negatives"


def test_train_stops_when_the_mined_rows_fail_the_data_gate(
    tmp_path, tiny_model_dir, pairs_csv, capsys, monkeypatch
):
    import gates.pipeline.stages as stages

    real = stages.validate_mined

    def failing(path, eval_path, tokenizer=None):
        outcome = real(path, eval_path, tokenizer)
        return type(outcome)(False, outcome.report, outcome.written)

    monkeypatch.setattr(stages, "validate_mined", failing)
    code = _train_tiny(tmp_path, tiny_model_dir, pairs_csv, "bad-mined", "mining.strategy=random")
    assert code == 1
    assert "data gate failed on the mined rows" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "bad-mined" / "model").exists()
