"""One entry point to load any of the six dataset types, and the conversion to a `datasets.Dataset`.

from training.data.loading import load_dataset, to_hf_dataset
data = load_dataset("pairs.csv", columns="anchor=question1,positive=question2")
train = to_hf_dataset(data)          # columns in the order sentence-transformers losses expect
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from training.data.beir import IRDataset, load_beir
from training.data.columns import map_columns, parse_column_overrides
from training.data.formats import DatasetType, negative_columns, parse_type
from training.data.hf_datasets import is_hf_source, read_hf_table
from training.data.readers import read_table
from training.errors import ColumnMappingError


@dataclass
class TableDataset:
    """A table dataset (every type but IR) with canonical columns; index = 1-based source row numbers."""

    dataset_type: DatasetType
    frame: object
    source: Path
    column_map: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frame)


def load_dataset(
    path: str | Path,
    dataset_type: str | DatasetType | None = None,
    columns: str | dict[str, str] | None = None,
) -> TableDataset | IRDataset:
    path = Path(path)
    dataset_type = parse_type(dataset_type)
    if dataset_type is not DatasetType.IR and is_hf_source(path):  # save_to_disk folder or hf:// Hub dataset
        mapped = map_columns(
            read_hf_table(path), dataset_type, parse_column_overrides(columns, str(path)), source=str(path)
        )
        return TableDataset(mapped.dataset_type, mapped.frame, path, mapped.column_map, mapped.notes)
    if dataset_type is DatasetType.IR or (dataset_type is None and path.is_dir()):
        if columns:
            raise ColumnMappingError(
                f"{path}: a column map applies to table files; an IR dataset uses the BEIR layout's own names "
                "(corpus.jsonl: _id,title,text; queries.jsonl: _id,text; qrels/<split>.tsv)",
                "remove",
                str(path),
            )
        return load_beir(path)
    frame = read_table(path)
    mapped = map_columns(frame, dataset_type, parse_column_overrides(columns, str(path)), source=str(path))
    return TableDataset(mapped.dataset_type, mapped.frame, path, mapped.column_map, mapped.notes)


def dataset_type_of(data: TableDataset | IRDataset) -> DatasetType:
    return DatasetType.IR if isinstance(data, IRDataset) else data.dataset_type


def to_hf_dataset(data: TableDataset | IRDataset, split: str = "train", min_grade: int = 1):
    """Training rows for sentence-transformers, in loss column order.

    pairs -> (anchor, positive) [rows with a binary label of 0 dropped]; triplets -> (anchor, positive, negative);
    sts -> (sentence1, sentence2, score as float); nli -> (premise, hypothesis, label as int);
    hard_negatives -> (anchor, positive, negative_1..n); ir -> (anchor=query, positive=relevant doc) pairs.
    """
    import datasets

    if isinstance(data, IRDataset):
        view = data.split(split)
        rows = {"anchor": [], "positive": []}
        seen: set[tuple[str, str]] = set()
        for qid, docs in sorted(view.relevant(min_grade).items()):
            for did in sorted(docs):
                pair = (view.queries[qid], view.corpus[did])
                # Two query ids with one text judging the same doc (SciFact has 4 such texts) would be the
                # same row twice: double weight for nothing, and a duplicate row the data gate refuses once mined.
                if pair in seen:
                    continue
                seen.add(pair)
                rows["anchor"].append(pair[0])
                rows["positive"].append(pair[1])
        return datasets.Dataset.from_dict(rows)
    frame = data.frame
    kind = data.dataset_type
    if kind is DatasetType.PAIRS and "label" in frame.columns:
        frame = frame[frame["label"].astype(str).str.strip().isin({"1", "1.0", "True", "true"})]
        frame = frame.drop(columns="label")
    frame = frame.copy()
    if kind is DatasetType.STS:
        frame["score"] = frame["score"].astype(float)
    if kind is DatasetType.NLI:
        frame["label"] = frame["label"].astype(float).astype(int)
    if kind is DatasetType.HARD_NEGATIVES:
        negs = negative_columns(frame.columns)
        # Rows with fewer negatives than the widest row: repeat their last negative so every row has n
        # (losses need a rectangular batch); the data gate already reported rows with no negative at all.
        frame[negs] = frame[negs].ffill(axis=1)
    return datasets.Dataset.from_pandas(frame.reset_index(drop=True), preserve_index=False)
