"""Build a version's drift reference at promotion: embed eval queries and a corpus sample through the *served*
runtime, describe the texts, calibrate the thresholds, write `reference/`.

    summary = build_reference(Path("artifacts/runs/r1/onnx"), eval_queries, corpus_sample,
                              Path("/tmp/stage/reference"), dim=384)
    registry.add_version({"onnx": onnx_dir, "reference": summary.out_dir, ...}, metadata=...)

Pass as many eval queries as you have (train + test queries of the domain set): the calibration splits them into
pseudo-windows, and more queries give tighter thresholds. `corpus_sample` should be a *random* sample of the
documents the service searches, not the eval queries' relevant documents (that inflates the reference's own
nearest-document cosine). `dim` is the served dim the reference is compared at: window rows served at a larger
dim are cut to it (exact for Matryoshka exports); rows served below it count only for the descriptors, so use the
smallest dim clients ask for.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from service.drift.calibration import DEFAULT_ALARM_SIGNALS, DEFAULT_SPLITS, calibrate
from service.drift.descriptors import DESCRIPTOR_NAMES, describe_texts
from service.drift.errors import DriftInputError
from service.drift.reference import ReferenceSpec, write_reference
from service.drift.settings import DEFAULT_WINDOW_ROWS
from service.drift.signals import nearest_doc_cosine
from service.prompts import apply_prompt, role_prompt


@dataclass(frozen=True)
class ReferenceSummary:
    """What build_reference wrote: where, how much, and the thresholds a window will be judged by."""

    out_dir: str
    files: tuple[str, ...]
    dim: int
    precision: str
    query_count: int
    corpus_count: int
    window_rows: int
    thresholds: dict[str, float]
    alarm_signals: tuple[str, ...]
    retrieval_reference_mean: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "files": list(self.files), "alarm_signals": list(self.alarm_signals)}


def build_reference(onnx_dir: Path, queries: list[str], corpus_sample: list[str], out_dir: Path, dim: int,
                    precision: str = "fp32", *, window_rows: int = DEFAULT_WINDOW_ROWS,
                    splits: int = DEFAULT_SPLITS, seed: int = 0,
                    alarm_signals: Sequence[str] = DEFAULT_ALARM_SIGNALS) -> ReferenceSummary:
    """Write the drift reference for the export in `onnx_dir` into `out_dir` (empty or absent).

    `window_rows` must match the service's EMBEDGATE_DRIFT_WINDOW_ROWS (default both 500): thresholds are
    calibrated for that window size."""
    from service.embedder import OnnxEmbedder

    started = time.perf_counter()
    _check_texts("queries", queries, minimum=20)
    _check_texts("corpus_sample", corpus_sample, minimum=1)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise DriftInputError(f"out_dir {out_dir} is not empty; build the reference into a new folder (a promoted "
                              f"version's reference is never rewritten)")
    embedder = OnnxEmbedder.from_export_dir(Path(onnx_dir), precision=precision)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim not in embedder.dims:
        raise DriftInputError(f"dim {dim!r} is not served by the export {onnx_dir}; served dims: "
                              f"{list(embedder.dims)}")
    # With the export's prompts, as clients sending input_type query / document are served (service/prompts.py).
    query_vectors = embedder.embed(apply_prompt(queries, role_prompt(embedder.info.prompts, "query")), dimensions=dim)
    corpus_vectors = embedder.embed(apply_prompt(corpus_sample, role_prompt(embedder.info.prompts, "document")),
                                    dimensions=dim)
    query_rows = _describe(embedder, queries)
    corpus_rows = _describe(embedder, corpus_sample)
    calibration = calibrate(query_vectors, {name: [row[name] for row in query_rows] for name in DESCRIPTOR_NAMES},
                            corpus_vectors, window_rows, splits=splits, seed=seed, alarm_signals=alarm_signals)
    spec = ReferenceSpec(
        dim=dim, precision=precision, query_count=len(queries), corpus_count=len(corpus_sample),
        descriptor_names=DESCRIPTOR_NAMES,
        embedding_method={"evidently": "ModelDriftMethod", "bootstrap": False, "score": "ROC AUC",
                          "rows": "distinct rows of the window vs the reference queries"},
        retrieval_reference_mean=float(nearest_doc_cosine(query_vectors, corpus_vectors).mean()),
        calibration=calibration, created_at=datetime.datetime.now(datetime.UTC).isoformat(),
        embedder={"export_id": embedder.info.export_id, "graph_sha256": embedder.info.graph_sha256,
                  "precision": precision, "max_seq_length": embedder.max_seq_length})
    files = write_reference(out_dir, spec, query_vectors, corpus_vectors, query_rows, corpus_rows)
    return ReferenceSummary(
        out_dir=str(out_dir), files=tuple(path.name for path in files), dim=dim, precision=precision,
        query_count=len(queries), corpus_count=len(corpus_sample), window_rows=window_rows,
        thresholds={s.name: s.threshold for s in calibration.signals}, alarm_signals=calibration.alarm_signals,
        retrieval_reference_mean=spec.retrieval_reference_mean, seconds=round(time.perf_counter() - started, 2))


def _describe(embedder: Any, texts: list[str]) -> list[dict[str, float]]:
    # Token counts before truncation, as the service records them; truncated = longer than the model reads.
    counts = embedder.count_tokens(texts)
    return describe_texts(texts, counts, [count > embedder.max_seq_length for count in counts])


def _check_texts(name: str, texts: Any, minimum: int) -> None:
    if not isinstance(texts, (list, tuple)) or len(texts) < minimum:
        got = f"{type(texts).__name__} of {len(texts)}" if isinstance(texts, (list, tuple)) else repr(texts)[:80]
        raise DriftInputError(f"{name}: expected a list of at least {minimum} strings, got {got}")
    bad = [index for index, text in enumerate(texts) if not isinstance(text, str) or not text.strip()]
    if bad:
        raise DriftInputError(f"{name}: entries {bad[:10]} are not non-empty strings (e.g. {texts[bad[0]]!r}); "
                              f"drop them before building the reference")
