"""`embedgate drift --export` and `--add-labels` on bad input: each stops with exit 2 and says the fix; the labelled
rows land in a new BEIR folder (train, test and `novel` splits). The whole loop runs in test_drift_loop.py."""

from __future__ import annotations

import csv
import json

import pytest

from gates.cli import main
from gates.drift_labels import DriftLabelsError, add_labels, export_novel
from service.drift.compute import WindowDriftResult
from service.drift.runner import write_summary
from service.drift.settings import DriftSettings
from tests.synthetic import write_lay_jargon_beir


def _verdict(window_id: str, drifted: bool, texts: str = "kept") -> WindowDriftResult:
    novel = {
        "cutoff": 0.5,
        "scored_rows": 10,
        "novel_rows": 2,
        "novel_groups": 1,
        "expected_share": 0.01,
        "texts": texts,
        "groups": [
            {
                "rows": 2,
                "distinct": 1,
                "examples": ["my child has a fever"],
                "nearest_reference_query": "rent deposit",
                "nearest_reference_cosine": 0.3,
                "row_ids": [1, 4],
                "row_scores": [0.3, 0.31],
            }
        ],
    }
    return WindowDriftResult(window_id, "v0001", 10, 10, "", None, "", 0.0, drifted, (), novel=novel)


@pytest.fixture
def settings(tmp_path):
    return DriftSettings(dir=tmp_path / "drift")


@pytest.mark.parametrize(
    ("verdicts", "kwargs", "message"),
    [
        ([("w1", False, "kept")], {}, r"no drifted window of the served version .* pass --window ID"),
        (
            [("w1", True, "kept")],
            {"window_ids": ["w9"]},
            r"--window \['w9'\]: no verdict .* `embedgate drift --list`",
        ),
        ([("w1", True, "hashed")], {}, r"texts were hashed at capture .* EMBEDGATE_DRIFT_TEXTS=keep"),
        ([("w1", True, "kept")], {"top_k": 0}, r"--top-k: expected at least 1"),
    ],
)
def test_export_refuses_what_it_cannot_label(settings, tmp_path, verdicts, kwargs, message):
    for window_id, drifted, texts in verdicts:
        write_summary(settings.summaries_dir, _verdict(window_id, drifted, texts))
    with pytest.raises(DriftLabelsError, match=message):
        export_novel(
            settings, tmp_path / "registry", tmp_path / "corpus.jsonl", tmp_path / "out.csv", **kwargs
        )
    with pytest.raises(DriftLabelsError, match=r"expected a .csv or .jsonl file name, got '.txt'"):
        export_novel(settings, tmp_path / "registry", tmp_path / "corpus.jsonl", tmp_path / "out.txt")


def test_export_without_a_champion_names_the_registry(settings, tmp_path):
    write_summary(settings.summaries_dir, _verdict("w1", True))
    data = write_lay_jargon_beir(tmp_path / "data")
    with pytest.raises(DriftLabelsError, match=r"version 'champion' does not exist in the registry"):
        export_novel(settings, tmp_path / "registry", data, tmp_path / "out.csv")


def _labelled(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "anchor", "positive", "positive_id", "count"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_labelled_rows_go_to_train_test_and_novel(tmp_path):
    data = write_lay_jargon_beir(tmp_path / "data")
    corpus = {json.loads(line)["_id"]: json.loads(line)["text"] for line in (data / "corpus.jsonl").open()}
    rows = [
        {"id": f"novel-{i}", "anchor": f"my child has a fever {i}", "positive": corpus["child-1"], "count": 2}
        for i in range(6)
    ]
    rows += [
        {
            "id": "novel-new",
            "anchor": "paracetamol dose",
            "positive": "Paracetamol: 15 mg per kg.",
            "count": 1,
        }
    ]
    rows += [{"id": "novel-skip", "anchor": "no idea", "positive": "", "count": 1}]
    done = add_labels(_labelled(tmp_path / "l.csv", rows), data, tmp_path / "v2", eval_share=0.5)
    assert (done.labelled, done.unlabelled, done.new_documents) == (7, 1, 1)
    assert (done.train, done.test) == (3, 4)
    qrels = {
        s: (tmp_path / "v2" / "qrels" / f"{s}.tsv").read_text().splitlines()
        for s in ("train", "test", "novel")
    }
    old = {s: (data / "qrels" / f"{s}.tsv").read_text().splitlines() for s in ("train", "test")}
    assert (
        qrels["train"][: len(old["train"])] == old["train"] and len(qrels["train"]) == len(old["train"]) + 3
    )
    assert (
        qrels["test"][: len(old["test"])] == old["test"]
        and qrels["test"][len(old["test"]) :] == qrels["novel"][1:]
    )
    assert any("\tchild-1\t2" in line for line in qrels["novel"] + qrels["train"])
    assert any("novel-doc-0001" in line for line in qrels["novel"] + qrels["train"])
    assert main(["validate", str(tmp_path / "v2"), "--out", str(tmp_path / "gate")]) == 0


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"id": "novel-1", "anchor": "a", "positive": ""}], r"no row has a positive; fill `positive`"),
        ([{"id": "q0", "anchor": "a", "positive": "p"}], r"row 1 has id 'q0', already a query of"),
        (
            [{"id": "novel-1", "anchor": "a", "positive": "p", "positive_id": "nope"}],
            r"positive_id 'nope' is not a document of .* leave positive_id empty",
        ),
    ],
)
def test_add_labels_refuses_rows_it_cannot_place(tmp_path, rows, message):
    data = write_lay_jargon_beir(tmp_path / "data")
    with pytest.raises(DriftLabelsError, match=message):
        add_labels(_labelled(tmp_path / "l.csv", rows), data, tmp_path / "v2")
    assert not (tmp_path / "v2").exists()


def test_add_labels_cli_errors_exit_2_with_the_fix(tmp_path, capsys):
    data = write_lay_jargon_beir(tmp_path / "data")
    labelled = _labelled(tmp_path / "l.csv", [{"id": "novel-1", "anchor": "a", "positive": "p"}])
    cases = [
        (["--add-labels", str(labelled), "--into", str(data)], "needs --into (the domain's BEIR folder"),
        (
            ["--add-labels", str(tmp_path / "x.csv"), "--into", str(data), "--out", str(tmp_path / "o")],
            "not found",
        ),
        (
            ["--add-labels", str(labelled), "--into", str(data), "--out", str(data)],
            "exists; name a new folder",
        ),
        (
            [
                "--add-labels",
                str(labelled),
                "--into",
                str(data),
                "--out",
                str(tmp_path / "o"),
                "--eval-share",
                "1",
            ],
            "--eval-share: expected a share in [0, 1), got 1.0",
        ),
    ]
    for args, message in cases:
        assert main(["drift", *args]) == 2, args
        assert message in capsys.readouterr().err, (args, message)
    (tmp_path / "bad.csv").write_text("query,answer\nx,y\n")
    assert (
        main(
            [
                "drift",
                "--add-labels",
                str(tmp_path / "bad.csv"),
                "--into",
                str(data),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert (
        "expected the columns id, anchor, positive (as exported), got ['answer', 'query']"
        in capsys.readouterr().err
    )
