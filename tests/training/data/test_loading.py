"""Loaders: every file format, BEIR layouts (BEIR-TSV and TREC qrels), column mapping, type detection,
list-valued JSONL negatives, and a one-line error (naming the file and line) for every file that cannot be read."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from training.data.beir import IRDataset
from training.data.formats import DatasetType
from training.data.loading import TableDataset, load_dataset, to_hf_dataset
from training.errors import DataFormatError

PAIRS = pd.DataFrame(
    {
        "anchor": ["what is a lease", "how do I sue", "is rent taxed"],
        "positive": ["a lease is a rental contract", "file a claim in court", "rent is income"],
    }
)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_beir(root: Path, qrels: dict[str, str], corpus: list[dict] | None = None) -> Path:
    root.mkdir()
    corpus = corpus or [
        {"_id": "d1", "title": "Leases", "text": "A lease is a contract."},
        {"_id": 2, "text": "Rent is income."},
    ]
    write_jsonl(root / "corpus.jsonl", corpus)
    write_jsonl(
        root / "queries.jsonl", [{"_id": "q1", "text": "what is a lease"}, {"_id": 7, "text": "is rent"}]
    )
    (root / "qrels").mkdir()
    for name, text in qrels.items():
        (root / "qrels" / name).write_text(text, encoding="utf-8")
    return root


# --- formats ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_every_table_format_loads_as_pairs_with_1_based_rows(tmp_path, suffix):
    path = tmp_path / f"pairs{suffix}"
    if suffix == ".csv":
        PAIRS.to_csv(path, index=False)
    elif suffix == ".tsv":
        PAIRS.to_csv(path, sep="\t", index=False)
    elif suffix == ".jsonl":
        write_jsonl(path, PAIRS.to_dict("records"))
    else:
        PAIRS.to_parquet(path, index=False)

    data = load_dataset(path)

    assert isinstance(data, TableDataset)
    assert data.dataset_type is DatasetType.PAIRS
    assert list(data.frame.columns) == ["anchor", "positive"]
    assert list(data.frame.index) == [1, 2, 3]
    assert data.frame.loc[2, "positive"] == "file a claim in court"


def test_csv_values_stay_text_so_the_gate_sees_bad_scores(tmp_path):
    path = tmp_path / "sts.csv"
    path.write_text("sentence1,sentence2,score\na,b,4.5\nc,d,abc\n", encoding="utf-8")
    data = load_dataset(path)
    assert data.dataset_type is DatasetType.STS
    assert data.frame["score"].tolist() == ["4.5", "abc"]


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffanchor,positive\nx,y\n".encode())
    assert list(load_dataset(path).frame.columns) == ["anchor", "positive"]


# --- BEIR -----------------------------------------------------------------------------------------------


def test_beir_folder_with_beir_tsv_qrels(tmp_path):
    root = write_beir(tmp_path / "ir", {"test.tsv": "query-id\tcorpus-id\tscore\nq1\td1\t1\n7\t2\t0\n"})
    data = load_dataset(root)
    assert isinstance(data, IRDataset)
    assert data.splits == ["test"]
    qrels = data.qrels["test"]
    assert qrels.values.tolist() == [["q1", "d1", "1"], ["7", "2", "0"]]
    assert list(qrels.index) == [2, 3]  # line numbers in the file (the header is line 1)
    assert data.corpus["_id"].tolist() == ["d1", "2"]  # numeric ids become strings
    assert data.corpus.loc[2, "title"] == "" or pd.isna(data.corpus.loc[2, "title"])
    split = data.split("test")
    assert split.qrels == {"q1": {"d1": 1}, "7": {"2": 0}}
    assert split.relevant() == {"q1": {"d1": 1}}
    assert split.corpus["d1"] == "Leases. A lease is a contract."


def test_beir_folder_with_trec_qrels(tmp_path):
    root = write_beir(tmp_path / "ir", {"train.txt": "q1 0 d1 2\n7 0 2 1\n"})
    data = load_dataset(root, "ir")
    assert data.splits == ["train"]
    assert data.qrels["train"].values.tolist() == [["q1", "d1", "2"], ["7", "2", "1"]]
    assert data.split("train").qrels == {"q1": {"d1": 2}, "7": {"2": 1}}


def test_beir_missing_text_key_is_left_missing_for_the_gate(tmp_path):
    root = write_beir(tmp_path / "ir", {"test.tsv": "q1\td1\t1\n"}, corpus=[{"_id": "d1", "body": "x"}])
    data = load_dataset(root)
    assert "text" not in data.corpus.columns
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl: no text key in any line"):
        data.doc_texts()


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda root: None, r"folder not found"),
        (lambda root: root.mkdir(), r"corpus\.jsonl: file not found"),
        (lambda root: write_beir(root, {}), r"qrels: no qrels files; expected qrels/<split>\.tsv"),
        (
            lambda root: write_beir(root, {"test.tsv": "q1\td1\n"}),
            r"test\.tsv:1: expected 3 tab-separated fields",
        ),
        (
            lambda root: (
                write_beir(root, {"test.tsv": "q1\td1\t1\n"}),
                (root / "corpus.jsonl").write_text("\n"),
            ),
            r"corpus\.jsonl: the file holds no JSON objects",
        ),
    ],
)
def test_beir_errors_name_the_file(tmp_path, setup, message):
    root = tmp_path / "ir"
    setup(root)
    with pytest.raises(DataFormatError, match=message):
        load_dataset(root, "ir")


def test_columns_option_is_refused_for_a_beir_folder(tmp_path):
    root = write_beir(tmp_path / "ir", {"test.tsv": "q1\td1\t1\n"})
    with pytest.raises(
        DataFormatError, match=r"a column map applies to table files.*; remove the columns argument$"
    ):
        load_dataset(root, columns="anchor=text")


# --- column mapping and type detection ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected_map"),
    [
        ("question1,question2,label", {"anchor": "question1", "positive": "question2", "label": "label"}),
        ("chq,faq,label", {"anchor": "chq", "positive": "faq", "label": "label"}),
        ("Query,Passage", {"anchor": "Query", "positive": "Passage"}),
    ],
)
def test_aliases_map_to_canonical_columns(tmp_path, header, expected_map):
    path = tmp_path / "pairs.csv"
    path.write_text(
        f"{header}\n" + ",".join(["x", "y", "1"][: header.count(",") + 1]) + "\n", encoding="utf-8"
    )
    data = load_dataset(path)
    assert data.dataset_type is DatasetType.PAIRS
    assert data.column_map == expected_map


def test_columns_override_beats_aliases_and_unused_columns_are_noted(tmp_path):
    path = tmp_path / "odd.csv"
    path.write_text("id,left,right,question\n1,a,b,c\n", encoding="utf-8")
    data = load_dataset(path, columns="anchor=left,positive=right")
    assert data.column_map["anchor"] == "left"
    assert data.frame.loc[1, "anchor"] == "a"
    assert any("ignored columns with no canonical name: id, question" in note for note in data.notes)


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ("anchor:left", r"expected canonical=source pairs .* got 'anchor:left'"),
        ("query_text=left", r"unknown canonical column 'query_text'"),
        (
            "anchor=nope",
            r"column map anchor=nope: no column 'nope' in the file; available columns: left, right; "
            r"correct the columns argument$",
        ),
    ],
)
def test_bad_columns_option(tmp_path, columns, message):
    path = tmp_path / "odd.csv"
    path.write_text("left,right\na,b\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=message):
        load_dataset(path, columns=columns)


@pytest.mark.parametrize(
    ("header", "row", "expected"),
    [
        ("anchor,positive", "a,b", DatasetType.PAIRS),
        ("anchor,positive,negative", "a,b,c", DatasetType.TRIPLETS),
        ("query,pos,neg_1,neg_2", "a,b,c,d", DatasetType.HARD_NEGATIVES),
        ("sentence1,sentence2,score", "a,b,3.5", DatasetType.STS),
        ("premise,hypothesis,label", "a,b,entailment", DatasetType.NLI),
        ("sentence1,sentence2,label", "a,b,2", DatasetType.NLI),
    ],
)
def test_type_detection(tmp_path, header, row, expected):
    path = tmp_path / "data.csv"
    path.write_text(f"{header}\n{row}\n", encoding="utf-8")
    assert load_dataset(path).dataset_type is expected


def test_nli_label_names_become_ids(tmp_path):
    path = tmp_path / "nli.csv"
    path.write_text("premise,hypothesis,label\na,b,entailment\nc,d,Contradiction\ne,f,1\n", encoding="utf-8")
    data = load_dataset(path)
    assert data.frame["label"].tolist() == [0, 2, "1"]
    assert any("mapped 2 NLI label names" in note for note in data.notes)


def test_undetectable_columns_name_the_fix(tmp_path):
    path = tmp_path / "mystery.csv"
    path.write_text("foo,bar\na,b\n", encoding="utf-8")
    with pytest.raises(
        DataFormatError,
        match=r"cannot tell the dataset type from columns \['bar', 'foo'\].*dataset_type='pairs'.*"
        r"columns='anchor=question1,positive=question2'",
    ):
        load_dataset(path)


def test_given_type_keeps_a_missing_required_column_missing_for_the_gate(tmp_path):
    path = tmp_path / "anchors.csv"
    path.write_text("anchor\na\n", encoding="utf-8")
    data = load_dataset(path, "pairs")
    assert list(data.frame.columns) == ["anchor"]


def test_unknown_type_is_refused():
    with pytest.raises(
        DataFormatError, match=r"unknown dataset type 'pears': expected one of pairs, triplets"
    ):
        load_dataset("x.csv", "pears")


def test_jsonl_list_negatives_expand_to_negative_columns(tmp_path):
    path = write_jsonl(
        tmp_path / "hn.jsonl",
        [
            {"query": "q1", "pos": "p1", "neg": ["n1", "n2", "n3"]},
            {"query": "q2", "pos": "p2", "neg": ["m1"]},
        ],
    )
    data = load_dataset(path)
    assert data.dataset_type is DatasetType.HARD_NEGATIVES
    assert list(data.frame.columns) == ["anchor", "positive", "negative_1", "negative_2", "negative_3"]
    assert data.frame.loc[2, "negative_1"] == "m1" and pd.isna(data.frame.loc[2, "negative_2"])
    assert any("expanded list column 'negative' into 3" in note for note in data.notes)
    rows = to_hf_dataset(data)
    assert rows[1] == {
        "anchor": "q2",
        "positive": "p2",
        "negative_1": "m1",
        "negative_2": "m1",
        "negative_3": "m1",
    }


def test_jsonl_list_positives_give_one_row_each_with_the_source_row_number(tmp_path):
    path = write_jsonl(
        tmp_path / "multi.jsonl", [{"anchor": "a", "positive": ["p", "q"]}, {"anchor": "b", "positive": "r"}]
    )
    data = load_dataset(path)
    assert data.frame["positive"].tolist() == ["p", "q", "r"]
    assert list(data.frame.index) == [1, 1, 2]


def test_labelled_pairs_drop_label_0_rows_for_training(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("question1,question2,label\na,b,1\nc,d,0\ne,f,1\n", encoding="utf-8")
    assert to_hf_dataset(load_dataset(path))["anchor"] == ["a", "e"]


# --- files that cannot be read: one line naming the file (and the line) ----------------------------------


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "latin1.csv",
            b"anchor,positive\na,b\ncaf\xe9,d\n",
            r"latin1\.csv:3: not valid UTF-8 \(byte 0xe9 at offset 23\); re-save the file as UTF-8",
        ),
        (
            "broken.jsonl",
            b'{"anchor": "a", "positive": "b"}\n\n{"anchor": "c" "positive": "d"}\n',
            r"broken\.jsonl:3: broken JSON line \(Expecting ',' delimiter at column 16\).*got '\{\"anchor\": \"c\"",
        ),
        ("list.jsonl", b'["a", "b"]\n', r"list\.jsonl:1: expected a JSON object per line, got list"),
        (
            "badrow.csv",
            b"anchor,positive\na,b\nc,d,e\n",
            r"badrow\.csv:3: cannot parse as CSV: Expected 2 fields in line 3, saw 3; check quoting and the delimiter",
        ),
        (
            "quote.tsv",
            b'anchor\tpositive\na\tb\n"open\td\n',
            r"quote\.tsv:3: cannot parse as TSV: EOF inside string",
        ),
        ("empty.csv", b"", r"empty\.csv: the file is empty; expected a header row and at least one data row"),
        (
            "header.csv",
            b"anchor,positive\n",
            r"header\.csv: no data rows; expected a header and at least one row",
        ),
        ("empty.jsonl", b"\n\n", r"empty\.jsonl: the file holds no JSON objects"),
        ("data.xlsx", b"PK", r"data\.xlsx: unsupported file extension '\.xlsx'; expected one of \.csv"),
        ("bad.parquet", b"not parquet", r"bad\.parquet: cannot read as Parquet"),
    ],
)
def test_unreadable_files_get_one_line_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataFormatError, match=message) as caught:
        load_dataset(path)
    assert "\n" not in str(caught.value)


def test_missing_file_and_directory_given_as_a_table(tmp_path):
    with pytest.raises(DataFormatError, match=r"nope\.csv: file not found \(check the path"):
        load_dataset(tmp_path / "nope.csv")
    with pytest.raises(
        DataFormatError, match=r"expected a table file, got a directory; .* type to ir \(dataset_type='ir'\)"
    ):
        load_dataset(tmp_path, "pairs")


def test_ir_training_rows_drop_pairs_repeated_under_another_query_id(tmp_path):
    import json

    from training.data.loading import load_dataset, to_hf_dataset

    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(
        json.dumps({"_id": "d1", "title": "", "text": "rent deposit"})
        + "\n"
        + json.dumps({"_id": "d2", "title": "", "text": "lease notice"})
        + "\n"
    )
    (tmp_path / "queries.jsonl").write_text(
        "".join(
            json.dumps({"_id": q, "text": t}) + "\n"
            for q, t in [("q1", "same text"), ("q2", "same text"), ("q3", "other")]
        )
    )
    (tmp_path / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td1\t1\nq2\td2\t1\nq3\td1\t1\n"
    )
    rows = to_hf_dataset(load_dataset(tmp_path))
    assert sorted(zip(rows["anchor"], rows["positive"], strict=True)) == [
        ("other", "rent deposit"),
        ("same text", "lease notice"),
        ("same text", "rent deposit"),
    ]
