"""Issue 31 item 13: a table whose dataset type cannot be told (or whose column map is wrong) stops each command
with the fix that command really has: validate and mine their --type / --columns flags, train its --type flag
and the data.columns config field, the pipeline its config keys, evaluate (and any eval set) renaming columns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gates.cli import main
from training.data.loading import load_dataset

FLAGS_FIX = (
    "set the dataset type (e.g. --type pairs) and map your column names to canonical ones (e.g. --columns "
)
RENAME_FIX = "rename the file's columns to a dataset type's canonical names"


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    """`q, doc`: pairs whose names match no alias (the issue's file); a well-named pairs file beside it."""
    q_doc = tmp_path / "q_doc.csv"
    q_doc.write_text(
        "q,doc\nwhat is a lease,a rental contract\nis rent taxed,rent is income\n", encoding="utf-8"
    )
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("anchor,positive\nhow do I renew a lease,ask the landlord\n", encoding="utf-8")
    return {"q_doc": q_doc, "pairs": pairs}


def error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith(("error: ", "ERROR: ")), lines
    return lines[-1]


def test_validate_names_its_flags(tmp_path, files, capsys):
    assert main(["validate", str(files["q_doc"]), "--out", str(tmp_path / "out")]) == 2
    line = error_line(capsys)
    assert "cannot tell the dataset type from columns ['doc', 'q']" in line
    assert FLAGS_FIX in line and "data.columns" not in line


def test_validate_asks_to_rename_an_eval_sets_columns(tmp_path, files, capsys):
    # --type / --columns describe PATH, not the --eval set: pointing at them would not help.
    code = main(
        ["validate", str(files["pairs"]), "--eval", str(files["q_doc"]), "--out", str(tmp_path / "o")]
    )
    assert code == 2
    line = error_line(capsys)
    assert f"{files['q_doc']}: cannot tell the dataset type" in line
    assert RENAME_FIX in line and "--type" not in line and "--columns" not in line


def test_validate_says_to_correct_its_columns_flag(tmp_path, files, capsys):
    code = main(["validate", str(files["q_doc"]), "--columns", "query=q", "--out", str(tmp_path / "out")])
    assert code == 2
    assert error_line(capsys).endswith(
        "column map: unknown canonical column 'query'; expected one of anchor, "
        "positive, negative, sentence1, sentence2, score, premise, hypothesis, "
        "label, negative_<i>; correct --columns"
    )


def test_mine_names_its_flags(tmp_path, files, capsys):
    assert main(["mine", str(files["q_doc"]), "--out", str(tmp_path / "mined")]) == 2
    line = error_line(capsys)
    assert FLAGS_FIX in line and "data.columns" not in line


def test_train_names_its_type_flag_and_the_config_field_it_has_for_columns(tmp_path, files, capsys):
    assert main(["train", "--data", str(files["q_doc"]), "--output-dir", str(tmp_path / "runs")]) == 2
    line = error_line(capsys)
    assert "set the dataset type (e.g. --type pairs)" in line
    assert "--set data.columns.anchor=question1 --set data.columns.positive=question2" in line
    assert "--columns" not in line  # train has no such flag


def test_train_asks_to_rename_an_eval_sets_columns(tmp_path, files, capsys):
    args = ["train", "--data", str(files["pairs"]), "--set", f"data.eval_path={files['q_doc']}"]
    assert main([*args, "--output-dir", str(tmp_path / "runs")]) == 2
    line = error_line(capsys)
    assert RENAME_FIX in line and "--type" not in line


def test_the_fix_train_names_maps_the_columns(files):
    from gates.commands.train import config_from_options

    sets = ["data.columns.anchor=q", "data.columns.positive=doc"]
    cfg = config_from_options(None, files["q_doc"], sets, **{"data.type": "pairs"})
    data = load_dataset(cfg.data.path, cfg.data.type, cfg.data.columns)
    assert data.column_map == {"anchor": "q", "positive": "doc"}
    assert data.frame["anchor"].tolist() == ["what is a lease", "is rent taxed"]


def _pipeline_config(tmp_path: Path, data: str) -> Path:
    config = tmp_path / "pipeline.yaml"
    config.write_text(f"data: {data}\noutput_dir: {tmp_path / 'runs'}\nrun_id: r1\n", encoding="utf-8")
    return config


def test_pipeline_names_its_config_keys(tmp_path, files, capsys):
    # The issue: "... pass --type / --columns", flags `embedgate pipeline` does not have.
    assert main(["pipeline", str(_pipeline_config(tmp_path, f"{{path: {files['q_doc']}}}"))]) == 2
    line = error_line(capsys)
    assert line.startswith(f"ERROR: {files['q_doc']}: cannot tell the dataset type from columns ['doc', 'q']")
    assert "set the dataset type (e.g. data.type: pairs)" in line
    assert "data: {columns: {anchor: question1, positive: question2}} in the config" in line
    assert "--type" not in line and "--columns" not in line
    recorded = json.loads((tmp_path / "runs" / "r1" / "pipeline.json").read_text())
    assert line == f"ERROR: {recorded['reason']}"
    assert all("--type" not in json.dumps(stage) for stage in recorded["stages"])


def test_pipeline_asks_to_rename_an_eval_sets_columns(tmp_path, files, capsys):
    data = f"{{path: {files['pairs']}, eval_path: {files['q_doc']}}}"
    assert main(["pipeline", str(_pipeline_config(tmp_path, data))]) == 2
    line = error_line(capsys)
    assert RENAME_FIX in line and "data.columns" not in line and "--type" not in line


@pytest.mark.parametrize(
    "data",
    ["{path: Q_DOC, type: pairs, columns: {anchor: q, positive: doc}}", "{path: Q_DOC}"],
)
def test_the_config_form_the_pipeline_names_maps_the_columns(tmp_path, files, data):
    from gates.commands.train import parse_set
    from gates.pipeline.config import load_pipeline_config

    config = _pipeline_config(tmp_path, data.replace("Q_DOC", str(files["q_doc"])))
    sets = (
        [] if "columns" in data else ["data.type=pairs", "data.columns.anchor=q", "data.columns.positive=doc"]
    )
    train = load_pipeline_config(config, parse_set(sets)).train
    assert load_dataset(train.data.path, train.data.type, train.data.columns).column_map == {
        "anchor": "q",
        "positive": "doc",
    }


def test_evaluate_asks_to_rename_columns(tmp_path, files, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("{}\n", encoding="utf-8")
    code = main(
        ["evaluate", str(run), "--data", str(files["q_doc"]), "--registry", str(tmp_path / "registry")]
    )
    assert code == 2
    line = error_line(capsys)
    assert RENAME_FIX in line and "--type" not in line and "--columns" not in line
