"""The drift reference a promoted version carries: what "normal" traffic looked like, and calibrated thresholds.

    registry/versions/v0003/reference/
      queries.npy         float32 [queries, dim]  the domain's queries, embedded through the served runtime
      corpus.npy          float32 [docs, dim]     a corpus sample (the retrieval signal's documents)
      descriptors.jsonl   one line per text: {"set": "queries"|"corpus", "held_out": bool (queries), <descriptors>,
                          "text" (queries: the domain's own query, shown beside a window's novel queries)}
      reference.json      dim, counts, the baselines new traffic is compared with, the calibration per signal

Written by `service.drift.reference_builder.build_reference` at promotion, read here by the drift computation. The window
rows are compared with the *queries* (served traffic is queries); the corpus sample answers "how close is each
query to its nearest document". Queries marked `held_out` were never trained on: they stand for new traffic (the
retrieval baseline, the novelty cutoff, the calibration's pseudo-windows). JSONL, not parquet: the served image
carries no pyarrow.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.drift.descriptors import DESCRIPTOR_NAMES
from service.drift.errors import DriftReferenceError
from service.drift.signals import SIGNALS, nearest_doc_cosine
from service.storage.atomic_files import write_json_atomic

# 2: held-out queries marked, baselines and thresholds from them (a format-1 reference false-alarms on new
# queries of its own domain once the model memorised its training queries: docs/drift.md).
REFERENCE_FORMAT = 2
REFERENCE_DIR = "reference"
SPEC_FILE = "reference.json"
QUERIES_FILE = "queries.npy"
CORPUS_FILE = "corpus.npy"
DESCRIPTORS_FILE = "descriptors.jsonl"
REFERENCE_FILES = (QUERIES_FILE, CORPUS_FILE, DESCRIPTORS_FILE, SPEC_FILE)


@dataclass(frozen=True)
class SignalThreshold:
    """One signal's calibration: its null distribution (reference vs reference) and the threshold chosen from it.

    threshold = max(null_mean + k * null_std, null_max, floor): above everything the reference produced against
    itself, with a margin, and never below a floor that a real change must exceed anyway."""

    name: str
    threshold: float
    null_mean: float
    null_std: float
    null_max: float
    floor: float
    in_alarm: bool  # whether this signal's verdict can raise the window's drift flag
    excluded: str | None = (
        None  # why a signal asked for in the alarm is kept out of it (too few held-out queries)
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Calibration:
    """How the thresholds were found: `splits` random splits drawing a pseudo-window of `current_rows` held-out
    queries (`null_from`) and judging it against the rest of the reference, for windows of `window_rows`."""

    window_rows: int
    current_rows: int
    reference_rows: int
    splits: int
    k: float
    seed: int
    seconds: float
    signals: tuple[SignalThreshold, ...]
    held_out_rows: int = 0
    null_from: str = "held-out queries"

    def signal(self, name: str) -> SignalThreshold:
        for signal in self.signals:
            if signal.name == name:
                return signal
        raise DriftReferenceError(
            f"the calibration has no signal {name!r}; it has {[s.name for s in self.signals]}"
        )

    @property
    def alarm_signals(self) -> tuple[str, ...]:
        return tuple(signal.name for signal in self.signals if signal.in_alarm)

    @property
    def excluded(self) -> dict[str, str]:
        """Signals asked for in the alarm but kept out of it, and why."""
        return {signal.name: signal.excluded for signal in self.signals if signal.excluded}

    def to_dict(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in asdict(self).items() if k != "signals"},
            "signals": {signal.name: signal.to_dict() for signal in self.signals},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        signals = tuple(
            SignalThreshold(**data["signals"][name]) for name in SIGNALS if name in data["signals"]
        )
        return cls(**{k: v for k, v in data.items() if k != "signals"}, signals=signals)


@dataclass(frozen=True)
class ReferenceSpec:
    """reference.json: what the reference holds and how to judge a window against it."""

    dim: int
    precision: str
    query_count: int
    corpus_count: int
    descriptor_names: tuple[str, ...]
    embedding_method: dict[str, Any]  # Evidently drift method and its parameters
    retrieval_reference_mean: float  # mean nearest-document cosine of the baseline (held-out) queries
    novelty_cutoff: float  # a row whose nearest reference query is below this cosine is novel
    held_out_count: int  # reference queries never trained on (the baseline when there are enough)
    calibration: Calibration
    created_at: str
    embedder: dict[str, Any] = field(default_factory=dict)  # export id, graph sha256: what embedded it
    format_version: int = REFERENCE_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "descriptor_names": list(self.descriptor_names),
            "calibration": self.calibration.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReferenceSpec:
        return cls(
            **{
                **data,
                "descriptor_names": tuple(data["descriptor_names"]),
                "calibration": Calibration.from_dict(data["calibration"]),
            }
        )


@dataclass(frozen=True)
class DriftReference:
    """A loaded reference: the spec, the arrays, and each reference query's nearest-document cosine."""

    path: Path
    spec: ReferenceSpec
    queries: np.ndarray = field(repr=False)
    corpus: np.ndarray = field(repr=False)
    query_descriptors: dict[str, np.ndarray] = field(repr=False)
    corpus_descriptors: dict[str, np.ndarray] = field(repr=False)
    query_nearest: np.ndarray = field(repr=False)
    held_out: np.ndarray = field(repr=False)  # bool [queries]
    query_novelty: np.ndarray = field(repr=False)  # each query's cosine to its nearest other reference query
    # each query's text (the novel-query list shows the nearest one); empty for a reference written without them
    query_texts: tuple[str, ...] = field(default=(), repr=False)

    @property
    def dim(self) -> int:
        return self.spec.dim

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), **self.spec.to_dict()}


def write_reference(
    out_dir: Path,
    spec: ReferenceSpec,
    queries: np.ndarray,
    corpus: np.ndarray,
    query_descriptors: Sequence[dict[str, float]],
    corpus_descriptors: Sequence[dict[str, float]],
    held_out: Sequence[bool],
    query_texts: Sequence[str] = (),
) -> list[Path]:
    """Write the four reference files into `out_dir` (created; must not hold a reference already). `query_texts`
    (optional, one per query) go into the query lines of descriptors.jsonl: the domain's own queries, shown beside
    a window's novel queries as the nearest known one."""
    out_dir = Path(out_dir)
    if (out_dir / SPEC_FILE).exists():
        raise DriftReferenceError(
            f"{out_dir} already holds a drift reference ({SPEC_FILE}); write to an empty "
            f"folder (a promoted version's reference is immutable)"
        )
    if len(held_out) != len(query_descriptors) or sum(bool(h) for h in held_out) != spec.held_out_count:
        raise DriftReferenceError(
            f"held_out: expected {len(query_descriptors)} flags with {spec.held_out_count} "
            f"set (reference.json), got {len(held_out)} with {sum(map(bool, held_out))}"
        )
    if query_texts and len(query_texts) != len(query_descriptors):
        raise DriftReferenceError(
            f"query_texts: expected one text per query ({len(query_descriptors)}), got {len(query_texts)}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / QUERIES_FILE, np.asarray(queries, dtype=np.float32))
    np.save(out_dir / CORPUS_FILE, np.asarray(corpus, dtype=np.float32))
    texts = list(query_texts) or [None] * len(query_descriptors)
    lines = [
        json.dumps({"set": "queries", "held_out": bool(flag), **row, **({"text": text} if text else {})})
        for row, flag, text in zip(query_descriptors, held_out, texts, strict=True)
    ]
    lines += [json.dumps({"set": "corpus", **row}) for row in corpus_descriptors]
    (out_dir / DESCRIPTORS_FILE).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    # reference.json last: its presence marks a complete reference.
    write_json_atomic(out_dir / SPEC_FILE, spec.to_dict())
    return [out_dir / name for name in REFERENCE_FILES]


def load_reference(ref_dir: Path) -> DriftReference:
    """Read and check a reference folder; every problem is a DriftReferenceError that says how to fix it."""
    ref_dir = Path(ref_dir)
    how = (
        "rebuild it with service.drift.reference_builder.build_reference (promotion writes it to "
        "registry/versions/<v>/reference)"
    )
    missing = [name for name in REFERENCE_FILES if not (ref_dir / name).is_file()]
    if missing:
        raise DriftReferenceError(f"{ref_dir}: not a drift reference, missing {missing}; {how}")
    try:
        data = json.loads((ref_dir / SPEC_FILE).read_text(encoding="utf-8"))
        if data.get("format_version") != REFERENCE_FORMAT:
            old = (
                " (format 1 was calibrated on the queries the model was trained on and flags new queries of "
                "its own domain as drift)"
                if data.get("format_version") == 1
                else ""
            )
            raise DriftReferenceError(
                f"{ref_dir / SPEC_FILE}: format_version {data.get('format_version')!r}, this "
                f"runtime reads {REFERENCE_FORMAT}{old}; {how}"
            )
        spec = ReferenceSpec.from_dict(data)
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise DriftReferenceError(
            f"{ref_dir / SPEC_FILE}: unreadable ({type(err).__name__}: {err}); {how}"
        ) from None
    queries, corpus = _load_matrix(ref_dir / QUERIES_FILE, how), _load_matrix(ref_dir / CORPUS_FILE, how)
    for name, matrix, count in (
        ("queries", queries, spec.query_count),
        ("corpus", corpus, spec.corpus_count),
    ):
        if matrix.shape != (count, spec.dim):
            raise DriftReferenceError(
                f"{ref_dir}: {name}.npy has shape {matrix.shape}, reference.json says "
                f"({count}, {spec.dim}); the reference is damaged: {how}"
            )
    query_descriptors, corpus_descriptors, held_out, texts = _load_descriptors(
        ref_dir / DESCRIPTORS_FILE, spec, how
    )
    return DriftReference(
        ref_dir,
        spec,
        queries,
        corpus,
        query_descriptors,
        corpus_descriptors,
        nearest_doc_cosine(queries, corpus),
        held_out,
        _leave_one_out_nearest(queries),
        texts,
    )


def _leave_one_out_nearest(queries: np.ndarray, chunk_rows: int = 1024) -> np.ndarray:
    """Each query's best cosine to another reference query, in chunks (a 5,000-query reference stays small)."""
    if len(queries) < 2:
        return np.full(len(queries), np.nan)
    parts = []
    for start in range(0, len(queries), chunk_rows):
        similarity = queries[start : start + chunk_rows] @ queries.T
        similarity[np.arange(len(similarity)), np.arange(start, start + len(similarity))] = -np.inf
        parts.append(similarity.max(axis=1))
    return np.concatenate(parts)


def _load_matrix(path: Path, how: str) -> np.ndarray:
    try:
        matrix = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise DriftReferenceError(f"{path}: not a numpy array file ({err}); {how}") from None
    if matrix.ndim != 2 or matrix.dtype != np.float32 or not np.isfinite(matrix).all():
        raise DriftReferenceError(
            f"{path}: expected finite float32 [rows, dim], got {matrix.dtype} {matrix.shape}; {how}"
        )
    return matrix


def _load_descriptors(
    path: Path, spec: ReferenceSpec, how: str
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, tuple[str, ...]]:
    if tuple(spec.descriptor_names) != DESCRIPTOR_NAMES:
        raise DriftReferenceError(
            f"{path}: descriptors {list(spec.descriptor_names)}, this runtime computes "
            f"{list(DESCRIPTOR_NAMES)}; {how}"
        )
    rows: dict[str, list[dict[str, Any]]] = {"queries": [], "corpus": []}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            record = json.loads(line)
            rows[record["set"]].append(record)
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DriftReferenceError(f"{path}:{number}: not a descriptor line ({err}); {how}") from None
    result = []
    for name, count in (("queries", spec.query_count), ("corpus", spec.corpus_count)):
        if len(rows[name]) != count:
            raise DriftReferenceError(
                f"{path}: {len(rows[name])} {name} lines, reference.json says {count}; {how}"
            )
        try:
            result.append(
                {d: np.asarray([row[d] for row in rows[name]], dtype=np.float64) for d in DESCRIPTOR_NAMES}
            )
        except (KeyError, ValueError, TypeError) as err:
            raise DriftReferenceError(
                f"{path}: a {name} line lacks a numeric descriptor ({err}); {how}"
            ) from None
    held_out = np.asarray([record.get("held_out") is True for record in rows["queries"]], dtype=bool)
    if int(held_out.sum()) != spec.held_out_count:
        raise DriftReferenceError(
            f"{path}: {int(held_out.sum())} queries marked held_out, reference.json says "
            f"{spec.held_out_count}; {how}"
        )
    texts = tuple(record.get("text") for record in rows["queries"])
    # all or nothing: a reference written before texts were stored has none
    return result[0], result[1], held_out, texts if all(isinstance(t, str) for t in texts) else ()
