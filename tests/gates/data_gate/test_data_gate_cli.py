"""`embedgate validate` through `gates.cli.main`: exit 0 pass, 1 gate failed, 2 unreadable input (one line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gates.cli import main


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_a_clean_file_exits_0_and_says_where_the_report_is(tmp_path, capsys):
    path = write(tmp_path / "pairs.csv", "question1,question2\nwhat is a lease,a rental contract\n")
    out = tmp_path / "out"
    assert main(["validate", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("PASSED")
    assert "warning   pairs  rows.minimum" in printed
    assert (
        f"report: {out / 'report.json'}" in printed
        and f"docs:   {out / 'docs' / 'summary.html'}" in printed
        and str(out / "docs" / "index.html") in printed
    )
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is True
    assert report["dataset"]["column_map"] == {"anchor": "question1", "positive": "question2"}


def test_a_failing_file_exits_1_and_prints_the_failed_checks(tmp_path, capsys):
    path = write(tmp_path / "sts.csv", "sentence1,sentence2,score\na dog,a cat,7\nx,y,1\nx,y,1\n")
    assert main(["validate", str(path), "--out", str(tmp_path / "out")]) == 1
    printed = capsys.readouterr().out
    assert printed.startswith("FAILED")
    range_line = next(line for line in printed.splitlines() if "score.range" in line)
    assert range_line.split()[0] == "error" and range_line.rstrip().endswith("1")
    assert "rows.no_duplicates" in printed
    assert json.loads((tmp_path / "out" / "report.json").read_text())["summary"]["failed_errors"] == 2


def test_options_reach_the_gate(tmp_path, capsys):
    path = write(tmp_path / "odd.csv", "left,right,extra\nhow do I renew a lease,ask,1\nrent,yes,2\n")
    eval_path = write(tmp_path / "eval.jsonl", '{"query": "How do I renew a LEASE?", "answer": "x"}\n')
    out = tmp_path / "out"
    code = main(
        [
            "validate",
            str(path),
            "--type",
            "pairs",
            "--columns",
            "anchor=left,positive=right",
            "--eval",
            str(eval_path),
            "--out",
            str(out),
            "--max-seq-length",
            "5",
        ]
    )
    assert code == 1
    report = json.loads((out / "report.json").read_text())
    failed = {
        e["check"]: [x["row"] for x in e["examples"]] for e in report["expectations"] if not e["passed"]
    }
    assert failed["anchor.not_in_eval"] == [1]
    assert failed["anchor.max_tokens"] == [1]  # 7 words + 2 special tokens > 5
    assert report["dataset"]["eval"] == {"source": str(eval_path), "type": "pairs"}
    assert report["dataset"]["max_seq_length"] == 5
    assert "note: ignored columns with no canonical name: extra" in capsys.readouterr().out


def test_tokenizer_option_takes_a_model_folder(tmp_path, minilm_dir):
    path = write(tmp_path / "pairs.csv", "anchor,positive\na lease,a contract\n")
    out = tmp_path / "out"
    assert main(["validate", str(path), "--out", str(out), "--tokenizer", str(minilm_dir)]) == 0
    assert json.loads((out / "report.json").read_text())["dataset"]["tokenizer"] == str(minilm_dir)


def test_default_out_dir_is_under_artifacts(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "legal.jsonl", '{"anchor": "a lease", "positive": "a contract"}\n')
    assert main(["validate", "legal.jsonl"]) == 0
    assert (tmp_path / "artifacts" / "data-gate" / "legal" / "report.json").is_file()
    assert (tmp_path / "artifacts" / "data-gate" / "legal" / "docs" / "index.html").is_file()


def test_a_beir_folder_is_validated(tmp_path, capsys):
    root = tmp_path / "ir"
    (root / "qrels").mkdir(parents=True)
    write(root / "corpus.jsonl", '{"_id": "d1", "text": "a lease"}\n')
    write(root / "queries.jsonl", '{"_id": "q1", "text": "what is a lease"}\n')
    write(root / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t1\n")
    assert main(["validate", str(root), "--out", str(tmp_path / "out")]) == 1
    line = next(line for line in capsys.readouterr().out.splitlines() if "corpus_id.known" in line)
    assert "qrels/test" in line and line.rstrip().endswith("3")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", None, r"missing\.csv: file not found"),
        ("latin1.csv", b"anchor,positive\na,b\ncaf\xe9,d\n", r"latin1\.csv:3: not valid UTF-8"),
        (
            "broken.jsonl",
            b'{"anchor": "a", "positive": "b"}\n{"anchor": "c",\n',
            r"broken\.jsonl:2: broken JSON line",
        ),
        (
            "badrow.csv",
            b"anchor,positive\na,b\nc,d,e\n",
            r"badrow\.csv:3: cannot parse as CSV: Expected 2 fields",
        ),
        ("table.xlsx", b"PK", r"table\.xlsx: unsupported file extension '\.xlsx'"),
        ("empty.csv", b"", r"empty\.csv: the file is empty"),
        ("empty.jsonl", b"", r"empty\.jsonl: the file holds no JSON objects"),
    ],
)
def test_unreadable_input_exits_2_with_one_line(tmp_path, capsys, name, content, message):
    import re

    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    assert main(["validate", str(path), "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert re.search(message, lines[0])
    assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--type", "pears"], r"unknown dataset type 'pears'"),
        (["--columns", "anchor=nope"], r"column map anchor=nope: no column 'nope'.*; correct --columns$"),
        (["--max-seq-length", "0"], r"max_seq_length: expected a positive whole number, got 0"),
        (["--tokenizer", "/no/such/model"], r"--tokenizer /no/such/model: expected a model folder"),
    ],
)
def test_bad_options_exit_2(tmp_path, capsys, args, message):
    import re

    path = write(tmp_path / "pairs.csv", "anchor,positive\na,b\n")
    assert main(["validate", str(path), "--out", str(tmp_path / "out"), *args]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_usage_errors_exit_2_without_a_traceback(capsys):
    assert main(["validate"]) == 2
    assert "Missing argument" in capsys.readouterr().err


def test_help_shows_an_example(capsys):
    assert main(["validate", "--help"]) == 0
    printed = capsys.readouterr().out
    assert "embedgate validate pairs.csv --columns anchor=question1,positive=question2" in printed
    assert "--max-seq-length" in printed and "--tokenizer" in printed and "--eval" in printed
