"""Map a table's source column names to canonical ones, and detect the dataset type from them.

Mapping order: the caller's column map (canonical=source) first, then the aliases in `formats.ALIASES`.
Mapping is lenient about *missing* required columns when the type is given: the data gate reports those as
failed checks (with every other problem) instead of stopping at the first one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from training.data.formats import (
    ALIASES,
    NEGATIVE_COLUMN,
    NLI_LABEL_NAMES,
    REQUIRED_COLUMNS,
    DatasetType,
    negative_columns,
)
from training.errors import ColumnMappingError, DataFormatError

CANONICAL = tuple(ALIASES) + ("negative_<i>",)


def parse_column_overrides(spec: str | dict[str, str] | None, source: str = "") -> dict[str, str]:
    """`"anchor=question1,positive=question2"` -> {"anchor": "question1", "positive": "question2"}."""
    if not spec:
        return {}
    if isinstance(spec, dict):
        pairs = list(spec.items())
    else:
        pairs = []
        for part in spec.split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise ColumnMappingError(
                    f"{_prefix(source)}column map: expected canonical=source pairs like "
                    f"'anchor=question1,positive=question2', got {part.strip()!r}",
                    "correct",
                    source,
                )
            key, value = part.split("=", 1)
            pairs.append((key.strip(), value.strip()))
    out = {}
    for key, value in pairs:
        if key not in ALIASES and not NEGATIVE_COLUMN.match(key) and not key.startswith("negative_"):
            raise ColumnMappingError(
                f"{_prefix(source)}column map: unknown canonical column {key!r}; expected one of "
                f"{', '.join(CANONICAL)}",
                "correct",
                source,
            )
        out[key] = value
    return out


@dataclass
class MappedTable:
    dataset_type: DatasetType
    frame: object  # pandas.DataFrame with canonical columns, index = 1-based source row numbers
    column_map: dict[str, str]  # canonical -> source column name
    notes: list[str] = field(default_factory=list)


def map_columns(
    frame, dataset_type: DatasetType | None = None, overrides: dict[str, str] | None = None, source: str = ""
) -> MappedTable:
    overrides = overrides or {}
    lower = {c.lower(): c for c in frame.columns}
    column_map: dict[str, str] = {}
    for canonical, src in overrides.items():
        if src not in frame.columns:
            raise ColumnMappingError(
                f"{_prefix(source)}column map {canonical}={src}: no column {src!r} in the file; "
                f"available columns: {', '.join(map(str, frame.columns))}",
                "correct",
                source,
            )
        column_map[canonical] = src
    used = set(column_map.values())
    for canonical, aliases in ALIASES.items():
        if canonical in column_map:
            continue
        for alias in aliases:
            src = lower.get(alias)
            if src is not None and src not in used:
                column_map[canonical] = src
                used.add(src)
                break
    for col in frame.columns:  # negative_1, neg2, hard_negative_3 ...
        match = NEGATIVE_COLUMN.match(col.lower())
        if match and col not in used:
            column_map[f"negative_{int(match.group(1))}"] = col
            used.add(col)

    out = frame[list(column_map.values())].copy()
    out.columns = list(column_map.keys())
    notes: list[str] = []
    unmapped = [str(col) for col in frame.columns if col not in used]
    if unmapped:
        notes.append(
            f"ignored columns with no canonical name: {', '.join(unmapped)} (a column map can name one)"
        )
    out = _expand_lists(out, notes)
    detected = dataset_type or detect_type(out.columns, out, source, found=frame.columns)
    out = _conform(out, detected, column_map, notes)
    return MappedTable(detected, out, column_map, notes)


def _expand_lists(frame, notes: list[str]):
    """JSONL hard-negative files often hold `neg: [..]` (and sometimes `pos: [..]`): expand them."""
    import pandas as pd

    if "negative" in frame.columns and frame["negative"].map(lambda v: isinstance(v, list)).any():
        lists = frame["negative"].map(lambda v: v if isinstance(v, list) else ([] if v is None else [v]))
        width = int(lists.map(len).max())
        wide = pd.DataFrame(
            lists.tolist(), index=frame.index, columns=[f"negative_{i + 1}" for i in range(width)]
        )
        frame = pd.concat([frame.drop(columns="negative"), wide], axis=1)
        notes.append(f"expanded list column 'negative' into {width} negative_<i> columns")
    if "positive" in frame.columns and frame["positive"].map(lambda v: isinstance(v, list)).any():
        before = len(frame)
        frame = frame.explode("positive")
        notes.append(f"expanded list column 'positive': {before} rows -> {len(frame)} (one row per positive)")
    return frame


def detect_type(columns, frame=None, source: str = "", found=None) -> DatasetType:
    """The type from canonical `columns`; `found` (the file's own column names) is what an error shows."""
    cols = set(columns)
    negs = negative_columns(cols)
    if {"premise", "hypothesis", "label"} <= cols:
        return DatasetType.NLI
    if {"sentence1", "sentence2"} <= cols:
        if "score" in cols:
            return DatasetType.STS
        if "label" in cols and frame is not None and _looks_like_nli_labels(frame["label"]):
            return DatasetType.NLI
    if {"anchor", "positive"} <= cols:
        if negs:
            return DatasetType.HARD_NEGATIVES
        if "negative" in cols:
            return DatasetType.TRIPLETS
        return DatasetType.PAIRS
    expected = "; ".join(f"{t.value}: {', '.join(c)}" for t, c in REQUIRED_COLUMNS.items())
    raise ColumnMappingError(
        f"{_prefix(source)}cannot tell the dataset type from columns "
        f"{sorted(map(str, columns if found is None else found))}; expected one of "
        f"[{expected}] (hard_negatives: anchor, positive, negative_1..n)",
        "name",
        source,
    )


def _prefix(source: str) -> str:
    return f"{source}: " if source else ""


def _looks_like_nli_labels(series) -> bool:
    values = {str(v).strip().lower() for v in series.dropna().unique()[:50]}
    return bool(values) and values <= {"0", "1", "2", *NLI_LABEL_NAMES}


# When the type is given, these stand in for a missing canonical column (e.g. an STS-style file used as pairs).
FALLBACKS = {
    "anchor": ("sentence1", "premise"),
    "positive": ("sentence2", "hypothesis"),
    "premise": ("sentence1", "anchor"),
    "hypothesis": ("sentence2", "positive"),
    "sentence1": ("anchor", "premise"),
    "sentence2": ("positive", "hypothesis"),
    "score": ("label",),
}


def _conform(frame, dataset_type: DatasetType, column_map: dict[str, str], notes: list[str]):
    """Select the type's canonical columns in loss order; keep a pair `label` so 0-rows can be dropped later."""
    if dataset_type is DatasetType.IR:
        raise DataFormatError(
            "an IR dataset is a BEIR folder (corpus.jsonl, queries.jsonl, qrels/), not a table"
        )
    frame = frame.copy()
    for canonical, alternatives in FALLBACKS.items():
        if canonical in REQUIRED_COLUMNS[dataset_type] and canonical not in frame.columns:
            for alt in alternatives:
                if alt in frame.columns:
                    frame[canonical] = frame[alt]
                    column_map[canonical] = column_map.get(alt, alt)
                    break
    if (
        dataset_type is DatasetType.TRIPLETS
        and "negative" not in frame.columns
        and "negative_1" in frame.columns
    ):
        frame["negative"] = frame["negative_1"]
    if dataset_type is DatasetType.NLI and "label" in frame.columns:
        named = frame["label"].map(lambda v: isinstance(v, str) and v.strip().lower() in NLI_LABEL_NAMES)
        if named.any():
            frame.loc[named, "label"] = frame.loc[named, "label"].map(
                lambda v: NLI_LABEL_NAMES[v.strip().lower()]
            )
            notes.append(
                f"mapped {int(named.sum())} NLI label names to ids (entailment 0, neutral 1, contradiction 2)"
            )
    wanted = [c for c in REQUIRED_COLUMNS[dataset_type] if c in frame.columns]
    if dataset_type is DatasetType.HARD_NEGATIVES:
        wanted += negative_columns(frame.columns)
    if dataset_type is DatasetType.PAIRS and "label" in frame.columns:
        wanted.append("label")  # binary pair labels: 0-rows are not positives (see loading.to_hf_dataset)
    dropped = [column_map.get(c, c) for c in frame.columns if c not in wanted and c in column_map]
    if dropped:
        notes.append(f"ignored columns not used by {dataset_type.value}: {', '.join(dropped)}")
    return frame[wanted]
