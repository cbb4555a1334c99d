"""Hugging Face datasets as data: a save_to_disk folder (Dataset or DatasetDict) loads as a table with the same
column mapping and goes through the same data gate; a Hub dataset offline is one clear error."""

from __future__ import annotations

import json

import pytest

from gates.cli import main
from tests import synthetic
from training.data.formats import DatasetType
from training.data.loading import load_dataset
from training.errors import DataFormatError


def _save(rows, target, columns=("question", "answer"), split=None):
    import datasets

    dataset = datasets.Dataset.from_dict({c: [r[i] for r in rows] for i, c in enumerate(columns)})
    (datasets.DatasetDict({split: dataset}) if split else dataset).save_to_disk(str(target))
    return target


def test_save_to_disk_folder_loads_as_a_mapped_table(tmp_path):
    data = load_dataset(_save(synthetic.make_pairs(50), tmp_path / "pairs"))
    assert data.dataset_type is DatasetType.PAIRS and list(data.frame.columns) == ["anchor", "positive"]
    assert data.column_map == {"anchor": "question", "positive": "answer"} and len(data) == 50
    assert data.frame.index[0] == 1  # row numbers as the file readers give them


def test_dataset_dict_uses_its_train_split_and_names_the_splits_it_lacks(tmp_path):
    assert len(load_dataset(_save(synthetic.make_pairs(20), tmp_path / "dd", split="train"))) == 20
    with pytest.raises(DataFormatError, match=r"a DatasetDict without a 'train' split \(it has \['test'\]\)"):
        load_dataset(_save(synthetic.make_pairs(20), tmp_path / "dd-test", split="test"))


def test_hub_dataset_offline_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    with pytest.raises(
        DataFormatError,
        match=r"^dataset hf://someone/pairs: the Hub is off \(HF_HUB_OFFLINE=1\) "
        r"and it is not in the Hugging Face cache",
    ):
        load_dataset("hf://someone/pairs")


def test_validate_runs_the_data_gate_on_a_saved_dataset(tmp_path, capsys):
    good = _save(synthetic.make_pairs(60), tmp_path / "good")
    assert main(["validate", str(good), "--out", str(tmp_path / "report-good")]) == 0, capsys.readouterr()
    bad_rows = synthetic.make_pairs(40) + [("same text", "same text")]
    bad = _save(bad_rows, tmp_path / "bad")
    assert main(["validate", str(bad), "--out", str(tmp_path / "report-bad")]) == 1
    report = json.loads((tmp_path / "report-bad" / "report.json").read_text())
    assert report["passed"] is False
