"""The embedded default dataset (training/data/legal_lay) that `make demo` runs on: it loads, has its documented
size, and its judgements are consistent. Fast: no model is loaded.

    pytest tests/training/data/test_default_dataset.py
"""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from training.data import DEFAULT_DATASET
from training.data.beir import IRDataset
from training.data.loading import load_dataset


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


@pytest.fixture(scope="module")
def data() -> IRDataset:
    loaded = load_dataset(DEFAULT_DATASET)
    assert isinstance(loaded, IRDataset)
    return loaded


def test_default_dataset_is_a_beir_folder_with_readme() -> None:
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv", "qrels/test.tsv", "README.md"):
        assert (DEFAULT_DATASET / name).is_file(), name
    for split in ("train", "test"):
        header = (DEFAULT_DATASET / "qrels" / f"{split}.tsv").read_text().splitlines()[0]
        assert header == "query-id\tcorpus-id\tscore"
    readme = (DEFAULT_DATASET / "README.md").read_text()
    assert "CC BY 4.0" in readme


def test_documented_counts(data: IRDataset) -> None:
    assert data.splits == ["test", "train"]
    assert len(data.corpus) >= 380
    assert len(data.split("train").qrels) >= 290
    assert len(data.split("test").qrels) >= 95
    # every query in queries.jsonl is judged in exactly one split
    judged = set(data.split("train").qrels) | set(data.split("test").qrels)
    assert judged == set(data.query_texts())


def test_ids_are_unique_and_every_qrels_id_exists(data: IRDataset) -> None:
    corpus_ids, query_ids = list(data.corpus["_id"]), list(data.queries["_id"])
    assert len(set(corpus_ids)) == len(corpus_ids)
    assert len(set(query_ids)) == len(query_ids)
    for split in data.splits:
        frame = data.qrels[split]
        assert set(frame["corpus_id"]) <= set(corpus_ids), split
        assert set(frame["query_id"]) <= set(query_ids), split
        assert not frame.duplicated(["query_id", "corpus_id"]).any(), split


def test_query_ids_name_their_split(data: IRDataset) -> None:
    for split in data.splits:
        assert list(data.split(split).qrels), "nothing to check: data.split(split).qrels is empty"
        assert all(q.startswith(f"q-{split}-") for q in data.split(split).qrels), split


def test_no_query_text_in_both_splits(data: IRDataset) -> None:
    train = {_norm(t) for t in data.split("train").queries.values()}
    test = {_norm(t) for t in data.split("test").queries.values()}
    assert not train & test
    all_texts = [_norm(t) for t in data.query_texts().values()]
    assert len(set(all_texts)) == len(all_texts), "duplicate query text"


def test_grades_are_1_or_2_and_every_query_has_an_answer(data: IRDataset) -> None:
    for split in data.splits:
        view = data.split(split)
        grades = Counter(g for docs in view.qrels.values() for g in docs.values())
        assert set(grades) <= {1, 2}, (split, grades)
        missing = [q for q, docs in view.qrels.items() if 2 not in docs.values()]
        assert not missing, f"{split}: queries without a grade-2 passage: {missing[:5]}"
        assert list(view.qrels.values()), "nothing to check: view.qrels.values() is empty"
        assert all(1 <= len(docs) <= 3 for docs in view.qrels.values()), split


def test_passages_are_unique_nonempty_and_sized(data: IRDataset) -> None:
    texts = [_norm(t) for t in data.corpus["text"]]
    assert len(set(texts)) == len(texts), "duplicate passage text"
    assert list(data.corpus["title"]), "nothing to check: data.corpus['title'] is empty"
    assert all(str(t).strip() for t in data.corpus["title"])
    words = [len(t.split()) for t in texts]
    assert min(words) >= 40 and max(words) <= 120, (min(words), max(words))


def test_passage_ids_follow_the_topic_scheme(data: IRDataset) -> None:
    pattern = re.compile(r"^doc-[a-z]+-\d{2}$")
    bad = [d for d in data.corpus["_id"] if not pattern.match(d)]
    assert not bad, bad[:5]
    topics = Counter(d.split("-")[1] for d in data.corpus["_id"])
    assert len(topics) >= 12, topics


def test_some_passages_are_distractors(data: IRDataset) -> None:
    judged = set().union(*(set(f["corpus_id"]) for f in data.qrels.values()))
    distractors = set(data.corpus["_id"]) - judged
    assert 0.10 <= len(distractors) / len(data.corpus) <= 0.20, len(distractors)


def test_files_are_strict_utf8_jsonl(data: IRDataset) -> None:
    for name, keys in (("corpus.jsonl", {"_id", "title", "text"}), ("queries.jsonl", {"_id", "text"})):
        for number, line in enumerate((DEFAULT_DATASET / name).read_text(encoding="utf-8").splitlines(), 1):
            assert set(json.loads(line)) == keys, f"{name}:{number}"


def test_split_view_feeds_training_pairs(data: IRDataset) -> None:
    view = data.split("train")
    pairs = [(view.queries[q], view.corpus[d]) for q, docs in view.relevant(2).items() for d in docs]
    assert len(pairs) >= 290
    assert list(pairs), "nothing to check: pairs is empty"
    assert all(q and p for q, p in pairs)
