"""Read CSV, TSV, JSONL and Parquet files into pandas, with one-line errors that name the file and line.

Everything is read as text (`dtype=str`) so that the data gate, not the parser, decides what a bad value is:
a score of "abc" must reach the gate and be reported, not be silently turned into NaN here.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from training.errors import ColumnMappingError, DataFormatError

SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def table_format(path: Path) -> str:
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise DataFormatError(
            f"{path}: unsupported file extension {path.suffix!r}; expected one of "
            f"{', '.join(sorted(SUFFIXES))} (rename the file, or convert it to CSV/JSONL/Parquet)"
        )
    return fmt


def require_file(path: Path) -> Path:
    if not path.exists():
        raise DataFormatError(
            f"{path}: file not found (check the path; relative paths are from {Path.cwd()})"
        )
    if path.is_dir():
        raise ColumnMappingError(f"{path}: expected a table file, got a directory", "ir", str(path))
    return path


def read_text(path: Path) -> str:
    """Decode a file as UTF-8 (a BOM is accepted); an invalid byte is reported with its line number."""
    data = require_file(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataFormatError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{data[err.start]:02x} at offset {err.start}); "
            f"re-save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix}`"
        ) from None


def read_jsonl(path: Path) -> list[dict]:
    """One JSON object per line; blank lines are skipped; a broken line is reported by number."""
    rows = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFormatError(
                f"{path}:{number}: broken JSON line ({err.msg} at column {err.colno}); expected one JSON object "
                f"per line (JSON Lines), got {line[:60]!r}"
            ) from None
        if not isinstance(obj, dict):
            raise DataFormatError(
                f"{path}:{number}: expected a JSON object per line, got {type(obj).__name__} {line[:60]!r}"
            )
        rows.append(obj)
    return rows


def read_delimited(path: Path, sep: str):
    import pandas as pd

    text = read_text(path)
    if not text.strip():
        raise DataFormatError(f"{path}: the file is empty; expected a header row and at least one data row")
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=sep,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            quoting=csv.QUOTE_MINIMAL,
            engine="c",
        )
    except pd.errors.ParserError as err:
        msg = str(err).strip().splitlines()[-1].removeprefix("Error tokenizing data. C error: ")
        raise DataFormatError(
            f"{path}{_parser_error_line(msg)}: cannot parse as {'TSV' if sep == chr(9) else 'CSV'}: "
            f"{msg}; check quoting and the delimiter (CSV uses ',', TSV uses tabs)"
        ) from None
    return frame


def _parser_error_line(message: str) -> str:
    """ ":<line>" from pandas' parser message: "Expected 3 fields in line 5, saw 4" names the 1-based file line;
    "EOF inside string starting at row 2" counts lines from 0 (the header is row 0)."""
    import re

    if match := re.search(r"in line (\d+)", message):
        return f":{match.group(1)}"
    if match := re.search(r"starting at row (\d+)", message):
        return f":{int(match.group(1)) + 1}"
    return ""


def read_table(path: str | Path):
    """Read a table file into a pandas DataFrame of strings (or native values for JSONL/Parquet)."""
    import pandas as pd

    path = Path(path)
    fmt = table_format(require_file(path))
    if fmt == "csv":
        frame = read_delimited(path, ",")
    elif fmt == "tsv":
        frame = read_delimited(path, "\t")
    elif fmt == "jsonl":
        rows = read_jsonl(path)
        if not rows:
            raise DataFormatError(f"{path}: the file holds no JSON objects; expected one object per line")
        frame = pd.DataFrame(rows)
    else:
        try:
            frame = pd.read_parquet(path)
        except Exception as err:  # pyarrow raises several types; all mean "not a readable parquet file"
            raise DataFormatError(
                f"{path}: cannot read as Parquet ({type(err).__name__}: {err}); "
                f"expected a Parquet file written by pandas/pyarrow"
            ) from None
    if frame.empty:
        raise DataFormatError(f"{path}: no data rows; expected a header and at least one row")
    frame.columns = [str(c).strip() for c in frame.columns]
    frame.index = range(1, len(frame) + 1)  # 1-based data row numbers, as reported by the data gate
    return frame
