"""IR ranking datasets in BEIR layout: `corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`.

Qrels files may be BEIR TSV (`query-id<TAB>corpus-id<TAB>score`, with header) or plain TREC
(`qid 0 docid grade`, whitespace separated, no header); grades are graded relevance (0 = not relevant).
Values are kept as read (strings), so the data gate can report a bad grade or an unknown id instead of the
loader silently dropping it. `IRDataset.split()` gives the typed view used for training and evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from training.data.readers import read_jsonl, read_text
from training.errors import DataFormatError

QRELS_SUFFIXES = (".tsv", ".txt", ".trec", ".qrels")


@dataclass(frozen=True)
class IRSplit:
    """Typed view of one split: text by id, and graded judgements {qid: {docid: grade}}."""

    queries: dict[str, str]
    corpus: dict[str, str]
    qrels: dict[str, dict[str, int]]

    def relevant(self, min_grade: int = 1) -> dict[str, dict[str, int]]:
        return {
            q: {d: g for d, g in docs.items() if g >= min_grade}
            for q, docs in self.qrels.items()
            if any(g >= min_grade for g in docs.values())
        }


@dataclass
class IRDataset:
    root: Path
    corpus: object  # DataFrame: _id, title, text (index: 1-based line number)
    queries: object  # DataFrame: _id, text
    qrels: dict[str, object] = field(default_factory=dict)  # split -> DataFrame: query_id, corpus_id, score

    @property
    def splits(self) -> list[str]:
        return sorted(self.qrels)

    def qrels_frame(self, split: str):
        if split not in self.qrels:
            raise DataFormatError(
                f"{self.root}: no qrels for split {split!r}; available splits: {', '.join(self.splits) or 'none'} "
                f"(expected a file qrels/{split}.tsv)"
            )
        return self.qrels[split]

    def _require(self, frame, name: str) -> None:
        missing = [c for c in ("_id", "text") if c not in frame.columns]
        if missing:
            raise DataFormatError(
                f"{self.root / name}: no {' or '.join(missing)} key in any line; expected "
                f'objects like {{"_id": "d1", "text": "..."}} (run `embedgate validate` on it)'
            )

    def doc_texts(self) -> dict[str, str]:
        """Title and text joined, as BEIR evaluates; empty titles are skipped."""
        self._require(self.corpus, "corpus.jsonl")
        titles = self.corpus["title"].fillna("").astype(str).str.strip()
        texts = self.corpus["text"].fillna("").astype(str).str.strip()
        joined = [f"{t}. {x}" if t and x else (t or x) for t, x in zip(titles, texts, strict=True)]
        return dict(zip(self.corpus["_id"].astype(str), joined, strict=True))

    def query_texts(self) -> dict[str, str]:
        self._require(self.queries, "queries.jsonl")
        return dict(
            zip(self.queries["_id"].astype(str), self.queries["text"].fillna("").astype(str), strict=True)
        )

    def split(self, name: str) -> IRSplit:
        frame = self.qrels_frame(name)
        qrels: dict[str, dict[str, int]] = {}
        for qid, did, grade in frame[["query_id", "corpus_id", "score"]].itertuples(index=False):
            qrels.setdefault(str(qid), {})[str(did)] = int(float(grade))
        queries = self.query_texts()
        return IRSplit({q: queries[q] for q in qrels if q in queries}, self.doc_texts(), qrels)


def _read_jsonl_frame(path: Path, optional: tuple[str, ...] = ()):
    """A BEIR jsonl file as a frame (index: 1-based object number). A missing `_id` or `text` key is left
    missing, so the data gate reports the column as absent; optional keys (a corpus `title`) default to ""."""
    import pandas as pd

    rows = read_jsonl(path)
    if not rows:
        raise DataFormatError(
            f"{path}: the file holds no JSON objects; expected one object per line, "
            f'e.g. {{"_id": "1", "text": "..."}}'
        )
    frame = pd.DataFrame(rows)
    for col in optional:
        if col not in frame.columns:
            frame[col] = ""
    if "_id" in frame.columns:
        frame["_id"] = frame["_id"].map(lambda v: None if v is None else str(v))
    frame.index = range(1, len(frame) + 1)
    return frame


def read_qrels(path: Path):
    """BEIR TSV (with header) or TREC (`qid 0 docid grade`) -> DataFrame query_id, corpus_id, score (strings)."""
    import pandas as pd

    lines = read_text(path).splitlines()
    rows, numbers = [], []
    header_seen = False
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        if not header_seen and number == 1 and len(parts) == 3 and not _is_number(parts[-1]):
            header_seen = True  # "query-id corpus-id score"
            continue
        if len(parts) == 4:  # TREC: qid iteration docid grade
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3:
            raise DataFormatError(
                f"{path}:{number}: expected 3 tab-separated fields (query-id, corpus-id, score) or 4 TREC fields "
                f"(qid 0 docid grade), got {len(parts)}: {line[:80]!r}"
            )
        rows.append([p.strip() for p in parts])
        numbers.append(number)
    frame = pd.DataFrame(rows, columns=["query_id", "corpus_id", "score"], index=numbers)
    return frame


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_beir(root: str | Path) -> IRDataset:
    root = Path(root)
    if not root.exists():
        raise DataFormatError(
            f"{root}: folder not found (an IR dataset is a BEIR folder with corpus.jsonl, "
            f"queries.jsonl and qrels/<split>.tsv)"
        )
    if not root.is_dir():
        raise DataFormatError(f"{root}: expected a BEIR folder for an IR dataset, got a file")
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (root / name).is_file():
            raise DataFormatError(
                f"{root / name}: file not found; a BEIR folder holds corpus.jsonl, "
                f"queries.jsonl and qrels/<split>.tsv"
            )
    corpus = _read_jsonl_frame(root / "corpus.jsonl", optional=("title",))
    queries = _read_jsonl_frame(root / "queries.jsonl")
    qrels_dir = root / "qrels"
    files = sorted(p for p in qrels_dir.glob("*") if p.suffix in QRELS_SUFFIXES) if qrels_dir.is_dir() else []
    if not files:
        raise DataFormatError(
            f"{qrels_dir}: no qrels files; expected qrels/<split>.tsv (e.g. qrels/test.tsv)"
        )
    qrels = {p.stem: read_qrels(p) for p in files}
    return IRDataset(root, corpus, queries, qrels)
