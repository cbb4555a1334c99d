"""Data gate on table datasets: for each type, one file that breaks every check at known rows (the report must
name exactly those checks and rows) and a clean file that passes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from gates.data_gate import validate_dataset
from training.data.loading import load_dataset

SEQ = 16  # a small max_seq_length so a 30-word text is "too long" for the truncation warning
LONG = " ".join(["tenant"] * 30)


def failing(report) -> dict[tuple[str, str], list[int]]:
    """(table, check) -> example row numbers, for every check that did not pass."""
    return {(r.table, r.check): [e.row for e in r.examples] for r in report.results if not r.passed}


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    pd.DataFrame(rows[1:], columns=rows[0]).to_csv(path, index=False)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def validate(path: Path, dataset_type: str | None = None, eval_path: Path | None = None, **kwargs):
    eval_data = load_dataset(eval_path) if eval_path else None
    return validate_dataset(
        load_dataset(path, dataset_type), eval_data=eval_data, max_seq_length=SEQ, **kwargs
    )


# --- pairs ----------------------------------------------------------------------------------------------


def test_pairs_every_check_fails_at_its_rows(tmp_path):
    path = write_csv(
        tmp_path / "pairs.csv",
        [
            ["question1", "question2", "label"],
            ["what is a lease", "a lease is a rental contract", "1"],  # 1 ok
            ["", "pay rent monthly", "1"],  # 2 anchor missing
            ["   ", "blank anchor", "1"],  # 3 anchor whitespace-only
            ["What is a LEASE?", "what is a lease", "1"],  # 4 anchor == positive once normalised
            ["what is a lease", "a lease is a rental contract", "1"],  # 5 duplicate of row 1
            ["can I sue my landlord", "yes in small claims court", "2"],  # 6 label not binary
            ["word " * 4001, "an absurdly long anchor", "0"],  # 7 > 20,000 chars (and too many tokens)
            [LONG, "a long anchor", "1"],  # 8 too many tokens (warning)
            ["is rent taxed", "rent is income", ""],  # 9 label missing
            ["who pays repairs", "", "1"],  # 10 positive missing
            ["How do I renew a LEASE", "ask the landlord", "1"],  # 11 also in the eval set
            ["is a deposit refundable", LONG, "0"],  # 12 positive too many tokens (warning)
        ],
    )
    eval_path = write_csv(tmp_path / "eval.csv", [["anchor", "positive"], ["how do i renew a lease?", "x"]])

    report = validate(path, eval_path=eval_path)

    assert failing(report) == {
        ("pairs", "anchor.not_null"): [2],
        ("pairs", "anchor.not_blank"): [3],
        ("pairs", "anchor_positive.differ"): [4],
        ("pairs", "rows.no_duplicates"): [5],
        ("pairs", "label.in_set"): [6],
        ("pairs", "anchor.max_chars"): [7],
        ("pairs", "anchor.max_tokens"): [7, 8],
        ("pairs", "label.not_null"): [9],
        ("pairs", "positive.not_null"): [10],
        ("pairs", "anchor.not_in_eval"): [11],
        ("pairs", "positive.max_tokens"): [12],
        ("pairs", "rows.minimum"): [],
    }
    assert not report.passed
    assert {r.check for r in report.warnings} == {"anchor.max_tokens", "positive.max_tokens", "rows.minimum"}
    duplicate = report.result("rows.no_duplicates").examples[0]
    assert dict(duplicate.values) == {
        "anchor": "what is a lease",
        "positive": "a lease is a rental contract",
        "label": "1",
        "duplicate_of_row": 1,
    }
    leak = report.result("anchor.not_in_eval")
    assert leak.examples[0].values["anchor__in_eval"] == "eval.csv row 1"
    assert leak.unexpected_count == 1 and leak.element_count == 12
    assert report.result("label.in_set").examples[0].values == {"label": "2"}
    tokens = report.result("anchor.max_tokens").examples[1].values
    assert tokens["anchor__tokens"] == 32  # 30 words + [CLS] + [SEP]
    size = report.result("rows.minimum")
    assert size.name == "expect_column_sum_to_be_between" and size.observed_value == 8  # rows labelled 1


def test_clean_pairs_pass_with_only_the_seed_size_warning(tmp_path):
    path = write_csv(
        tmp_path / "pairs.csv",
        [
            ["anchor", "positive"],
            ["what is a lease", "a rental contract"],
            ["is rent taxed", "rent is income"],
        ],
    )
    report = validate(path)
    assert report.passed
    assert failing(report) == {("pairs", "rows.minimum"): []}
    assert "2,000 pairs" in report.result("rows.minimum").description
    assert report.result("rows.minimum").observed_value == 2


def test_pairs_at_the_seed_minimum_pass_every_check(tmp_path):
    rows = [["anchor", "positive"]] + [[f"question {i} about rent", f"answer {i}"] for i in range(2000)]
    report = validate(write_csv(tmp_path / "pairs.csv", rows))
    assert failing(report) == {}
    assert report.passed and not report.warnings


def test_pairs_from_jsonl_flag_non_text_values_and_accept_boolean_labels(tmp_path):
    path = write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {"anchor": "what is a lease", "positive": "a contract", "label": True},
            {"anchor": 42, "positive": "a number", "label": False},
            {"anchor": ["a", "list"], "positive": "a list", "label": 1},
            {"anchor": "is rent taxed", "positive": "yes", "label": "true"},
        ],
    )
    report = validate(path)
    assert failing(report) == {("pairs", "anchor.is_text"): [2, 3], ("pairs", "rows.minimum"): []}
    assert report.result("anchor.is_text").examples[0].values == {"anchor": 42, "anchor__type": "int"}


def test_a_missing_required_column_is_reported(tmp_path):
    path = write_csv(tmp_path / "anchors.csv", [["anchor"], ["what is a lease"]])
    report = validate(path, "pairs")
    assert failing(report) == {("pairs", "positive.exists"): [], ("pairs", "rows.minimum"): []}
    assert report.result("positive.exists").name == "expect_column_to_exist"


def test_leakage_against_an_ir_eval_set(tmp_path):
    root = tmp_path / "ir"
    (root / "qrels").mkdir(parents=True)
    write_jsonl(root / "corpus.jsonl", [{"_id": "d1", "text": "a lease is a contract"}])
    write_jsonl(
        root / "queries.jsonl", [{"_id": "q1", "text": "Is rent taxed?"}, {"_id": "q2", "text": "other"}]
    )
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n", encoding="utf-8")
    train = write_csv(
        tmp_path / "pairs.csv",
        [
            ["anchor", "positive"],
            ["what is a lease", "a contract"],
            ["is  RENT taxed", "yes"],
            ["other", "not judged in test"],
        ],
    )
    report = validate(train, eval_path=root)
    assert failing(report)[("pairs", "anchor.not_in_eval")] == [2]
    value = report.result("anchor.not_in_eval").examples[0].values["anchor__in_eval"]
    assert value == "queries.jsonl row 1 (_id q1)"
    assert report.dataset.eval_type == "ir"


# --- triplets, hard negatives ---------------------------------------------------------------------------


def test_triplets_every_check_fails_at_its_rows(tmp_path):
    path = write_csv(
        tmp_path / "triplets.csv",
        [
            ["anchor", "positive", "negative"],
            ["what is a lease", "a rental contract", "a bus ticket"],  # 1 ok
            ["is rent taxed", "Rent is income.", "rent is income"],  # 2 negative == positive
            ["who pays repairs", "the landlord", ""],  # 3 negative missing
            ["can I sue", "yes", "  "],  # 4 negative blank
        ],
    )
    report = validate(path)
    assert failing(report) == {
        ("triplets", "positive_negative.differ"): [2],
        ("triplets", "negative.not_null"): [3],
        ("triplets", "negative.not_blank"): [4],
        ("triplets", "rows.minimum"): [],
    }
    assert report.result("positive_negative.differ").examples[0].values["positive__same_as"] == "negative"


def test_triplets_without_a_negative_column(tmp_path):
    report = validate(
        write_csv(tmp_path / "t.csv", [["anchor", "positive"], ["a lease", "a contract"]]), "triplets"
    )
    assert failing(report) == {("triplets", "negative.exists"): [], ("triplets", "rows.minimum"): []}


def test_hard_negatives_from_jsonl_lists(tmp_path):
    path = write_jsonl(
        tmp_path / "hn.jsonl",
        [
            {"query": "q one", "pos": "p one", "neg": ["n one", "n two"]},  # 1 ok
            {"query": "q two", "pos": "p two", "neg": ["n three", "P TWO"]},  # 2 negative_2 == positive
            {"query": "q three", "pos": "p three", "neg": []},  # 3 no negative at all
            {"query": "q four", "pos": "p four", "neg": ["n four"]},  # 4 fewer negatives than row 1: fine
            {"query": "q five", "pos": "p five", "neg": ["  ", "n five"]},  # 5 blank negative_1
        ],
    )
    report = validate(path)
    assert report.dataset.dataset_type == "hard_negatives"
    assert failing(report) == {
        ("hard_negatives", "positive_negative.differ"): [2],
        ("hard_negatives", "negatives.at_least_one"): [3],
        ("hard_negatives", "negative_1.not_blank"): [5],
        ("hard_negatives", "rows.minimum"): [],
    }
    assert report.result("positive_negative.differ").examples[0].values["positive__same_as"] == "negative_2"
    assert any("expanded list column 'negative'" in note for note in report.dataset.notes)


# --- sts, nli -------------------------------------------------------------------------------------------


def test_sts_every_check_fails_at_its_rows(tmp_path):
    path = write_csv(
        tmp_path / "sts.csv",
        [
            ["sentence1", "sentence2", "score"],
            ["a man plays guitar", "a man plays a guitar", "4.5"],  # 1 ok
            ["a dog runs", "a cat sleeps", "abc"],  # 2 not a number
            ["a bird sings", "a bird flies", "nan"],  # 3 NaN
            ["a child reads", "a child writes", "5.5"],  # 4 above 5
            ["a car drives", "a boat sails", "-1"],  # 5 below 0
            ["a woman cooks", "a man cooks", ""],  # 6 missing
            ["it rains", "it pours", "inf"],  # 7 infinite
            ["A man plays.", "a man plays", "5"],  # 8 identical sentences are legal in STS
        ],
    )
    report = validate(path)
    assert failing(report) == {
        ("sts", "score.is_number"): [2, 3, 7],
        ("sts", "score.range"): [4, 5],
        ("sts", "score.not_null"): [6],
        ("sts", "rows.minimum"): [],
    }
    assert [e.values["score"] for e in report.result("score.is_number").examples] == ["abc", "nan", "inf"]


def test_clean_sts_passes(tmp_path):
    path = write_csv(
        tmp_path / "sts.csv", [["sentence1", "sentence2", "score"], ["a", "b", "0"], ["c", "d", "5.0"]]
    )
    assert validate(path).passed


def test_nli_every_check_fails_at_its_rows(tmp_path):
    path = write_jsonl(
        tmp_path / "nli.jsonl",
        [
            {"premise": "a man sleeps", "hypothesis": "a man rests", "label": 0},  # 1 ok
            {"premise": "a dog runs", "hypothesis": "a dog moves", "label": 3},  # 2 not a class
            {"premise": "a cat eats", "hypothesis": "a cat is hungry", "label": "maybe"},  # 3 not a class
            {"premise": "a bird sings", "hypothesis": "it is quiet", "label": None},  # 4 missing
            {
                "premise": "a car drives",
                "hypothesis": "a car is parked",
                "label": "contradiction",
            },  # 5 name: fine
            {"premise": "it rains", "hypothesis": "it rains", "label": 1.0},  # 6 float id, same texts: fine
        ],
    )
    report = validate(path)
    assert failing(report) == {
        ("nli", "label.in_set"): [2, 3],
        ("nli", "label.not_null"): [4],
        ("nli", "rows.minimum"): [],
    }
    assert "10,000 labelled pairs" in report.result("rows.minimum").description


@pytest.mark.parametrize("dataset_type", ["pairs", "triplets", "sts", "nli", "hard_negatives"])
def test_every_check_has_a_severity_a_gx_name_and_a_description(tmp_path, dataset_type):
    header = {
        "pairs": ["anchor", "positive"],
        "triplets": ["anchor", "positive", "negative"],
        "sts": ["sentence1", "sentence2", "score"],
        "nli": ["premise", "hypothesis", "label"],
        "hard_negatives": ["anchor", "positive", "negative_1"],
    }[dataset_type]
    report = validate(
        write_csv(tmp_path / "d.csv", [header, ["a b", "c d", "1"][: len(header)]]), dataset_type
    )
    assert len(report.results) >= 10
    for result in report.results:
        assert result.severity in ("error", "warning")
        assert result.name.startswith("expect_")
        assert result.description and result.exception is None
