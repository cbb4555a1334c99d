"""Train/eval leakage: the same query-side text in training and evaluation data inflates every eval metric.

The query side is what a user would type: `anchor` (pairs, triplets, hard negatives), `sentence1` (STS),
`premise` (NLI), and for an IR folder the text of the queries judged in the relevant qrels splits. Texts are
compared after `derived.normalise_text` (case, whitespace and end punctuation do not hide a leak).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gates.data_gate.derived import normalise_text
from training.data.beir import IRDataset
from training.data.formats import DatasetType

if TYPE_CHECKING:
    import pandas as pd

    from training.data.loading import TableDataset

TRAIN_SPLITS = ("train",)
EVAL_SPLITS = ("test", "dev", "validation", "val")
QUERY_COLUMN = {
    DatasetType.PAIRS: "anchor",
    DatasetType.TRIPLETS: "anchor",
    DatasetType.HARD_NEGATIVES: "anchor",
    DatasetType.STS: "sentence1",
    DatasetType.NLI: "premise",
    DatasetType.IR: "text",
}


@dataclass(frozen=True)
class QuerySide:
    """Normalised query texts of one dataset, indexed by position in its table, with a pointer per row."""

    column: str  # the column the texts come from ("anchor", "text")
    texts: pd.Series  # normalised text (None: nothing to compare), index = table positions
    where: pd.Series  # "test.csv row 17" for each position, to show the user where the copy is


def table_query_side(data: TableDataset) -> QuerySide | None:
    column = QUERY_COLUMN[data.dataset_type]
    if column not in data.frame.columns:
        return None  # the missing column is reported by its own check
    frame = data.frame.reset_index()
    name = Path(data.source).name
    where = frame["index"].map(lambda row: f"{name} row {row}")
    return QuerySide(column, normalise_text(frame[column]), where)


def judged_splits(data: IRDataset, role: str) -> list[str]:
    """Training side: qrels/train; evaluation side: test/dev/validation. Falls back to every split."""
    wanted = TRAIN_SPLITS if role == "train" else EVAL_SPLITS
    found = [s for s in data.splits if s in wanted]
    return found or list(data.splits)


def ir_query_side(data: IRDataset, splits: list[str]) -> QuerySide | None:
    """The queries judged in `splits`, as positions in queries.jsonl (other positions hold None)."""
    queries = data.queries.reset_index()
    if "_id" not in queries.columns or "text" not in queries.columns or not splits:
        return None
    judged = set()
    for split in splits:
        judged.update(data.qrels[split]["query_id"].astype(str))
    in_splits = queries["_id"].isin(judged)
    texts = normalise_text(queries["text"]).where(in_splits, None).astype(object)
    where = (
        queries["index"].astype(str).radd("queries.jsonl row ") + " (_id " + queries["_id"].astype(str) + ")"
    )
    return QuerySide("text", texts, where)


def query_side(data: TableDataset | IRDataset, role: str) -> QuerySide | None:
    if isinstance(data, IRDataset):
        return ir_query_side(data, judged_splits(data, role))
    return table_query_side(data)


def leaked_to(train: QuerySide, other: QuerySide) -> pd.Series:
    """Per training position: where the same normalised text sits in `other` (first copy), else None."""
    first = {}
    for text, where in zip(other.texts, other.where, strict=True):
        if text is not None:
            first.setdefault(text, where)
    return train.texts.map(lambda text: None if text is None else first.get(text)).astype(object)
