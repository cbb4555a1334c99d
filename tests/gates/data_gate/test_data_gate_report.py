"""Data gate report, Data Docs and atomic writing; tokenizer choice and token counting; input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from gates.data_gate import DataGateError, validate_dataset, write_report
from gates.data_gate import docs as docs_module
from gates.data_gate.console import summary_text
from gates.data_gate.derived import normalise_text
from training.data.loading import load_dataset


def pairs_file(tmp_path: Path, rows: list[tuple[str, str]], name: str = "pairs.csv") -> Path:
    path = tmp_path / name
    pd.DataFrame(rows, columns=["anchor", "positive"]).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def blank_report(tmp_path_factory):
    """8 whitespace-only anchors (rows 2-9) among 10 rows: more offenders than the 5 examples kept."""
    rows = [("what is a lease", "a contract")] + [(" " * (i + 1), f"answer {i}") for i in range(8)]
    rows.append(("is rent taxed", "yes"))
    return validate_dataset(load_dataset(pairs_file(tmp_path_factory.mktemp("blank"), rows)))


def test_report_dict_is_strict_json_with_counts_and_five_examples(blank_report):
    data = json.loads(json.dumps(blank_report.to_dict(), allow_nan=False))
    assert data["passed"] is False
    assert data["summary"] == {
        "expectations": len(blank_report.results),
        "failed_errors": 1,
        "failed_warnings": 1,
    }
    assert data["dataset"]["type"] == "pairs" and data["dataset"]["rows"] == {"pairs": 10}
    assert data["dataset"]["column_map"] == {"anchor": "anchor", "positive": "positive"}
    assert data["dataset"]["max_seq_length"] == 256  # from all-MiniLM-L6-v2's sentence_bert_config.json
    blank = next(e for e in data["expectations"] if e["check"] == "anchor.not_blank")
    assert blank["name"] == "expect_column_values_to_not_match_regex"
    assert blank["severity"] == "error" and blank["passed"] is False and blank["columns"] == ["anchor"]
    assert (blank["element_count"], blank["unexpected_count"], blank["unexpected_percent"]) == (10, 8, 80.0)
    assert [e["row"] for e in blank["examples"]] == [2, 3, 4, 5, 6]
    assert blank["examples"][0]["values"] == {"anchor": " "}


def test_write_report_writes_json_and_data_docs(tmp_path, blank_report):
    written = write_report(blank_report, tmp_path / "out")
    assert json.loads(written.report_json.read_text()) == json.loads(json.dumps(blank_report.to_dict()))
    assert written.docs_index == tmp_path / "out" / "docs" / "index.html" and written.docs_index.is_file()
    pages = list((tmp_path / "out" / "docs" / "validations").rglob("*.html"))
    assert len(pages) == 1
    html = pages[0].read_text()
    assert "is not empty or whitespace-only" in html and "[ERROR]" in html
    summary = (tmp_path / "out" / "docs" / "summary.html").read_text()
    assert '<tr class="FAIL"><td>FAIL</td><td>error</td>' in summary and "anchor.not_blank" in summary
    assert "2, 3, 4, 5, 6" in summary and "<script" not in summary  # offline: no JavaScript, no CDN
    assert f'href="{pages[0].relative_to(tmp_path / "out" / "docs").as_posix()}"' in summary
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder left behind
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755


def test_rewriting_replaces_the_report_and_a_failed_write_changes_nothing(
    tmp_path, blank_report, monkeypatch
):
    clean = validate_dataset(load_dataset(pairs_file(tmp_path, [("a lease", "a contract")])))
    out = tmp_path / "out"
    write_report(blank_report, out)
    write_report(clean, out)
    assert json.loads((out / "report.json").read_text())["passed"] is True
    assert len(list((out / "docs" / "validations").rglob("*.html"))) == 1  # old docs replaced, not merged

    def broken_docs(report, target):
        target.mkdir(parents=True)
        (target / "half.html").write_text("half-written")
        raise OSError("disk full")

    monkeypatch.setattr(docs_module, "build_data_docs", broken_docs)
    with pytest.raises(OSError, match="disk full"):
        write_report(blank_report, out)
    assert json.loads((out / "report.json").read_text())["passed"] is True
    assert not (out / "docs" / "half.html").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "pairs.csv"]


def test_write_report_refuses_a_file_as_out_dir(tmp_path, blank_report):
    target = tmp_path / "report.txt"
    target.write_text("x")
    with pytest.raises(
        DataGateError, match=r"report\.txt: expected a folder for report\.json and docs/, got a file"
    ):
        write_report(blank_report, target)


def test_summary_text_lists_failures_warnings_and_paths(tmp_path, blank_report):
    written = write_report(blank_report, tmp_path / "out")
    text = summary_text(blank_report, written)
    assert text.startswith("FAILED")
    assert "1 failed errors, 1 warnings" in text
    line = next(line for line in text.splitlines() if "anchor.not_blank" in line)
    assert "8 (80.00%)" in line and "2, 3, 4, 5, 6" in line
    assert (
        f"report: {written.report_json}" in text
        and f"docs:   {written.docs_index.parent / 'summary.html'}" in text
        and f"        {written.docs_index}" in text
    )


def test_summary_text_says_the_rule_each_flagged_check_missed(blank_report):
    # Issue 31 item 13: `rows.minimum  observed 10` without "at least 2,000 pairs" only report.json explained.
    lines = summary_text(blank_report).splitlines()
    for check in ("rows.minimum", "anchor.not_blank"):
        at = next(i for i, line in enumerate(lines) if f" {check} " in line)
        rule = blank_report.result(check).description
        assert lines[at + 1].split() == ["expected:", *rule.split()]
    assert "at least 2,000 pairs" in blank_report.result("rows.minimum").description


# --- tokenizers -------------------------------------------------------------------------------------------


def word_tokenizer():
    """Whitespace WordLevel tokenizer, no special tokens: n words -> n tokens, and truncation switched on."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate("a b c d e f".split())}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.enable_truncation(3)
    return tokenizer


def test_a_model_folder_gives_the_tokenizer_and_max_seq_length(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    word_tokenizer().save(str(model / "tokenizer.json"))
    (model / "sentence_bert_config.json").write_text('{"max_seq_length": 4}')
    path = pairs_file(tmp_path, [("a b c d", "a"), ("a b c d e", "b")])
    report = validate_dataset(load_dataset(path), tokenizer=model)
    assert report.dataset.max_seq_length == 4 and report.dataset.tokenizer == str(model)
    tokens = report.result("anchor.max_tokens")
    assert [(e.row, e.values["anchor__tokens"]) for e in tokens.examples] == [
        (2, 5)
    ]  # counted past truncation
    assert (
        validate_dataset(load_dataset(path), tokenizer=model, max_seq_length=5)
        .result("anchor.max_tokens")
        .passed
    )


def test_a_tokenizer_object_is_used_untruncated_and_left_unchanged(tmp_path):
    tokenizer = word_tokenizer()
    report = validate_dataset(
        load_dataset(pairs_file(tmp_path, [("a b c d e f", "a")])), tokenizer=tokenizer, max_seq_length=5
    )
    assert report.result("anchor.max_tokens").examples[0].values["anchor__tokens"] == 6
    assert tokenizer.truncation["max_length"] == 3
    assert report.dataset.max_seq_length == 5


def test_minilm_counts_are_not_cut_at_its_stored_truncation_of_128(tmp_path):
    text = " ".join(["lease"] * 200)
    path = pairs_file(tmp_path, [(text, "a contract")])
    assert validate_dataset(load_dataset(path)).result("anchor.max_tokens").passed  # 202 <= 256
    result = validate_dataset(load_dataset(path), max_seq_length=150).result("anchor.max_tokens")
    assert result.examples[0].values["anchor__tokens"] == 202


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda tmp: tmp / "absent",
            r"absent: expected a model folder holding tokenizer\.json, got a path that does",
        ),
        (
            lambda tmp: tmp,
            r"no tokenizer\.json in the folder; expected a sentence-transformers or Hugging Face",
        ),
        (
            lambda tmp: (tmp / "tokenizer.json").write_text("{oops") and tmp,
            r"tokenizer\.json: cannot load as a tokenizers",
        ),
    ],
)
def test_bad_tokenizer_folders(tmp_path, make, message):
    data = load_dataset(pairs_file(tmp_path, [("a", "b")], name="p.csv"))
    model = tmp_path / "model"
    model.mkdir()
    with pytest.raises(DataGateError, match=message):
        validate_dataset(data, tokenizer=make(model))


def test_bad_arguments(tmp_path):
    data = load_dataset(pairs_file(tmp_path, [("a", "b")]))
    with pytest.raises(DataGateError, match=r"max_seq_length: expected a positive whole number, got -1"):
        validate_dataset(data, max_seq_length=-1)
    with pytest.raises(DataGateError, match=r"max_chars: expected a positive whole number, got 0"):
        validate_dataset(data, max_chars=0)
    with pytest.raises(DataGateError, match=r"data: expected a TableDataset or IRDataset .* got DataFrame"):
        validate_dataset(data.frame)
    with pytest.raises(DataGateError, match=r"eval_data: expected a TableDataset or IRDataset .* got str"):
        validate_dataset(data, eval_data="eval.csv")
    with pytest.raises(
        DataGateError, match=r"tokenizer: expected a model folder or a tokenizers\.Tokenizer, got int"
    ):
        validate_dataset(data, tokenizer=3)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  What IS a\tLease?? ", "what is a lease"),
        ("'quoted'", "quoted"),
        ("???", None),
        (None, None),
        (42, None),
    ],
)
def test_normalise_text(text, expected):
    assert normalise_text(pd.Series([text], dtype=object)).iloc[0] == expected


def byte_level_bpe():
    """A small byte-level BPE (GPT-2 style) tokenizer trained on the spot."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(["the tenant pays the rent", "the landlord repairs the roof"] * 50, trainer)
    return tokenizer


BOUND_TEXTS = [
    "a",
    "What is a lease?",
    "x" * 300,
    "tenant " * 40,
    "a  b\t\tc",
    "rent!!!???...",
    "İSTANBUL café",
    "日本語のテキスト",
    "\ufdfa",
    "naïve",
    "",
]


@pytest.mark.parametrize("make", ["minilm", "byte_level_bpe", "word_level"])
def test_the_token_bound_never_undercounts(make, minilm_dir):
    from gates.data_gate.tokens import load_tokenizer, token_upper_bound, untruncated

    tokenizer = {
        "minilm": lambda: load_tokenizer(minilm_dir),
        "byte_level_bpe": byte_level_bpe,
        "word_level": word_tokenizer,
    }[make]()
    tokenizer = untruncated(tokenizer)
    bound = token_upper_bound(tokenizer)
    checked = 0
    for text in BOUND_TEXTS:
        upper = bound(text)
        if upper is not None:
            assert upper >= len(tokenizer.encode(text).ids), text
            checked += 1
    assert checked == sum(t.isascii() for t in BOUND_TEXTS)  # non-ASCII texts are always encoded


def test_count_tokens_is_exact_above_the_limit_and_bounded_below(minilm_dir):
    from gates.data_gate.tokens import count_tokens, load_tokenizer

    tokenizer = load_tokenizer(minilm_dir)
    texts = pd.Series(["what is a lease", "lease " * 60, "ﬁ" * 40, None, 7], dtype=object)
    counts = count_tokens(texts, tokenizer, limit=20)
    exact = [len(tokenizer.encode(t).ids) for t in texts[:3]]
    assert counts[1] == exact[1] == 62 and counts[2] == exact[2]  # over the limit, or not ASCII: encoded
    assert exact[0] <= counts[0] <= 20  # "what is a lease": 15 chars + 1 + 2 specials, never encoded
    assert counts[3:].isna().all()


def test_a_replace_normalizer_turns_the_bound_off():
    from tokenizers import normalizers

    from gates.data_gate.tokens import token_upper_bound

    tokenizer = word_tokenizer()
    tokenizer.normalizer = normalizers.Sequence([normalizers.Replace("a", "a a a"), normalizers.Lowercase()])
    assert token_upper_bound(tokenizer)("a") is None
