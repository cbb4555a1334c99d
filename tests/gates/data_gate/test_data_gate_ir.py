"""Data gate on IR (BEIR) folders: corpus, queries and each qrels split, every check broken at known rows."""

from __future__ import annotations

import json
from pathlib import Path

from gates.data_gate import validate_dataset
from training.data.loading import load_dataset

SEQ = 16
LONG = " ".join(["tenant"] * 30)


def failing(report) -> dict[tuple[str, str], list[int]]:
    return {(r.table, r.check): [e.row for e in r.examples] for r in report.results if not r.passed}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def write_beir(root: Path, corpus: list[dict], queries: list[dict], qrels: dict[str, str]) -> Path:
    (root / "qrels").mkdir(parents=True)
    write_jsonl(root / "corpus.jsonl", corpus)
    write_jsonl(root / "queries.jsonl", queries)
    for name, text in qrels.items():
        (root / "qrels" / name).write_text(text, encoding="utf-8")
    return root


def broken_folder(root: Path) -> Path:
    corpus = [
        {"_id": "d1", "title": "Leases", "text": "A lease is a rental contract."},  # 1 id repeated by row 3
        {"_id": "d2", "title": "", "text": "Rent is income for the landlord."},  # 2
        {"_id": "d1", "title": "Copy", "text": "Different text."},  # 3 duplicate id
        {"_id": "d4", "title": "", "text": "   "},  # 4 blank text
        {"_id": None, "title": "", "text": "No id here."},  # 5 missing id
        {"_id": "d6", "title": "Long", "text": LONG},  # 6 longer than max_seq_length (warning)
        {
            "_id": "d7",
            "title": "",
            "text": "Rent is income for the landlord.",
        },  # 7 same document as row 2 (warning)
        {"_id": "  ", "title": "", "text": "blank id"},  # 8 blank id
        {"_id": "d9", "title": 5, "text": "a number as title"},  # 9 title not text
    ]
    queries = [
        {"_id": "q1", "text": "what is a lease"},  # 1 judged in train; same text as q3 judged in test: leak
        {"_id": "q2", "text": "is rent taxed"},  # 2 id repeated by row 5
        {"_id": "q3", "text": "What is a lease?"},  # 3
        {"_id": "q4", "text": "who pays repairs"},  # 4 judged in test, nothing relevant
        {"_id": "q2", "text": "dup id"},  # 5 duplicate id
    ]
    train = (
        "query-id\tcorpus-id\tscore\n"
        "q1\td1\t1\n"  # line 2
        "q9\td1\t1\n"  # line 3 unknown query
        "q1\td99\t1\n"  # line 4 unknown document
        "q2\td2\t-1\n"  # line 5 negative grade
        "q2\td2\t1.5\n"  # line 6 not an integer, and the pair is judged twice
        "q2\td1\t1\n"
    )
    test = "q3 0 d1 1\nq4 0 d2 0\n"  # TREC format
    return write_beir(root, corpus, queries, {"train.tsv": train, "test.txt": test})


def test_ir_every_check_fails_at_its_rows(tmp_path):
    report = validate_dataset(load_dataset(broken_folder(tmp_path / "ir")), max_seq_length=SEQ)

    assert failing(report) == {
        ("corpus", "_id.unique"): [1, 3],
        ("corpus", "text.not_blank"): [4],
        ("corpus", "_id.not_null"): [5],
        ("corpus", "text.max_tokens"): [6],
        ("corpus", "text.no_duplicates"): [7],
        ("corpus", "_id.not_blank"): [8],
        ("corpus", "title.is_text"): [9],
        ("queries", "_id.unique"): [2, 5],
        ("queries", "judged_test.has_relevant"): [4],
        ("queries", "text.not_in_test"): [1],
        ("queries", "judged.minimum"): [],
        ("qrels/train", "query_id.known"): [3],
        ("qrels/train", "corpus_id.known"): [4],
        ("qrels/train", "score.grade"): [5, 6],
        ("qrels/train", "rows.no_duplicates"): [6],
    }
    assert {r.check for r in report.warnings} == {"text.max_tokens", "text.no_duplicates", "judged.minimum"}
    assert (
        report.result("text.not_in_test").examples[0].values["text__in_test"]
        == "queries.jsonl row 3 (_id q3)"
    )
    assert report.result("rows.no_duplicates", "qrels/train").examples[0].values["duplicate_of_row"] == 5
    assert report.result("text.no_duplicates", "corpus").examples[0].values["duplicate_of_row"] == 2
    assert (
        report.result("judged.minimum").observed_value == 3
    )  # rows of queries with a relevant train judgement
    assert report.result("text.max_tokens", "corpus").columns == ("title", "text")
    tables = {t.name: (t.rows, t.row_numbers) for t in report.dataset.tables}
    assert tables["qrels/test"] == (2, "line number in the file")
    assert tables["corpus"][0] == 9


def clean_folder(root: Path, n_train: int = 100) -> Path:
    corpus = [{"_id": f"d{i}", "title": "", "text": f"document {i} about rent"} for i in range(n_train + 20)]
    queries = [{"_id": f"q{i}", "text": f"question {i} about rent"} for i in range(n_train + 20)]
    train = "".join(f"q{i}\td{i}\t1\n" for i in range(n_train))
    test = "".join(f"q{i}\td{i}\t2\nq{i}\td0\t0\n" for i in range(n_train, n_train + 20))
    return write_beir(root, corpus, queries, {"train.tsv": train, "test.tsv": test})


def test_clean_ir_folder_passes_every_check(tmp_path):
    report = validate_dataset(load_dataset(clean_folder(tmp_path / "ir")), max_seq_length=SEQ)
    assert failing(report) == {}
    assert report.passed
    assert report.result("judged.minimum").observed_value == 100


def test_below_100_judged_training_queries_is_only_a_warning(tmp_path):
    report = validate_dataset(load_dataset(clean_folder(tmp_path / "ir", n_train=99)), max_seq_length=SEQ)
    assert failing(report) == {("queries", "judged.minimum"): []}
    assert report.passed
    assert "100 queries with relevance judgements" in report.result("judged.minimum").description


def test_a_missing_text_key_fails_the_column_check(tmp_path):
    root = write_beir(
        tmp_path / "ir",
        [{"_id": "d1", "body": "x"}],
        [{"_id": "q1", "text": "q"}],
        {"test.tsv": "q1\td1\t1\n"},
    )
    report = validate_dataset(load_dataset(root), max_seq_length=SEQ)
    assert ("corpus", "text.exists") in failing(report)
    assert not report.passed


def test_ir_training_queries_against_a_separate_eval_set(tmp_path):
    root = clean_folder(tmp_path / "ir")
    eval_path = tmp_path / "eval.jsonl"
    write_jsonl(
        eval_path, [{"anchor": "Question 7 about RENT?", "positive": "x"}, {"anchor": "new", "positive": "y"}]
    )
    report = validate_dataset(load_dataset(root), eval_data=load_dataset(eval_path), max_seq_length=SEQ)
    assert failing(report) == {("queries", "text.not_in_eval"): [8]}  # q7 is the 8th query object
    assert report.result("text.not_in_eval").examples[0].values["text__in_eval"] == "eval.jsonl row 1"


def test_no_split_leak_check_without_a_train_split(tmp_path):
    root = write_beir(
        tmp_path / "ir",
        [{"_id": "d1", "text": "x"}],
        [{"_id": "q1", "text": "q"}],
        {"test.tsv": "q1\td1\t1\n"},
    )
    report = validate_dataset(load_dataset(root), max_seq_length=SEQ)
    assert "text.not_in_test" not in {r.check for r in report.results}
    assert report.passed


def test_an_empty_qrels_split_is_an_error(tmp_path):
    root = write_beir(
        tmp_path / "ir",
        [{"_id": "d1", "text": "x"}],
        [{"_id": "q1", "text": "q"}],
        {"test.tsv": "query-id\tcorpus-id\tscore\n", "train.tsv": "q1\td1\t1\n"},
    )
    report = validate_dataset(load_dataset(root), max_seq_length=SEQ)
    assert failing(report) == {("qrels/test", "rows.not_empty"): [], ("queries", "judged.minimum"): []}
    assert report.result("rows.not_empty", "qrels/test").observed_value == 0
