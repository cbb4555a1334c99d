"""Build a version's drift reference at promotion: embed the domain's queries and a corpus sample through the
*served* runtime, describe the texts, calibrate the thresholds on held-out queries, write `reference/`.

    from service.drift.reference_builder import build_reference
    summary = build_reference(Path("artifacts/runs/r1/onnx"), train_queries, corpus_sample,
                              Path("/tmp/stage/reference"), dim=384, held_out_queries=test_queries)
    registry.add_version({"onnx": onnx_dir, "reference": summary.out_dir, ...}, metadata=...)

`queries` are the domain's queries the model was trained on; `held_out_queries` those it never saw (the eval
split). The held-out ones stand for new traffic: the retrieval baseline, the novelty cutoff and every signal's
null distribution come from them, because a fine-tuned model places its own training queries closer to their
documents than any new query (docs/drift.md). A signal with fewer than MIN_HELD_OUT held-out queries is reported
but kept out of the alarm (`summary.excluded` says which and why). `corpus_sample` should be a *random* sample of
the documents the service searches, not the queries' relevant documents (that inflates the nearest-document
cosine). `dim` is the served dim the reference is compared at: window rows served at a larger dim are cut to it
(exact for Matryoshka exports); rows served below it count only for the descriptors, so use the smallest dim
clients ask for. `gates.pipeline.drift_texts.pipeline_reference_texts` picks these texts for `embedgate pipeline`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.drift.calibration import (
    DEFAULT_ALARM_SIGNALS,
    DEFAULT_SPLITS,
    MIN_REFERENCE_QUERIES,
    reference_spec,
)
from service.drift.descriptors import describe_texts
from service.drift.errors import DriftInputError
from service.drift.reference import write_reference
from service.drift.settings import DEFAULT_WINDOW_ROWS
from service.model.prompts import apply_prompt, role_prompt


@dataclass(frozen=True)
class ReferenceSummary:
    """What build_reference wrote: where, how much, and the thresholds a window will be judged by."""

    out_dir: str
    files: tuple[str, ...]
    dim: int
    precision: str
    query_count: int
    held_out_count: int
    corpus_count: int
    window_rows: int
    thresholds: dict[str, float]
    alarm_signals: tuple[str, ...]
    excluded: dict[str, str]  # signals kept out of the alarm, and why (too few held-out queries)
    retrieval_reference_mean: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "files": list(self.files), "alarm_signals": list(self.alarm_signals)}


def build_reference(
    onnx_dir: Path,
    queries: list[str],
    corpus_sample: list[str],
    out_dir: Path,
    dim: int,
    precision: str = "fp32",
    *,
    held_out_queries: Sequence[str] = (),
    window_rows: int = DEFAULT_WINDOW_ROWS,
    splits: int = DEFAULT_SPLITS,
    seed: int = 0,
    alarm_signals: Sequence[str] = DEFAULT_ALARM_SIGNALS,
) -> ReferenceSummary:
    """Write the drift reference for the export in `onnx_dir` into `out_dir` (empty or absent).

    `queries`: queries the model was trained on; `held_out_queries`: queries it never saw (at least 20, 40 for
    every signal to alarm). `window_rows` must match the service's EMBEDGATE_DRIFT_WINDOW_ROWS (default both
    500): thresholds are calibrated for that window size."""
    from service.model.embedder import OnnxEmbedder

    started = time.perf_counter()
    _check_texts("queries", queries, minimum=0)
    _check_texts("held_out_queries", held_out_queries, minimum=0)
    if len(queries) + len(held_out_queries) < MIN_REFERENCE_QUERIES:
        raise DriftInputError(
            f"queries + held_out_queries: expected at least {MIN_REFERENCE_QUERIES} strings in "
            f"all, got "
            f"{len(queries)} + {len(held_out_queries)}"
        )
    _check_texts("corpus_sample", corpus_sample, minimum=1)
    trained = set(queries)
    seen = [index for index, text in enumerate(held_out_queries) if text in trained]
    if seen:
        raise DriftInputError(
            f"held_out_queries: entries {seen[:10]} (e.g. {held_out_queries[seen[0]]!r}) are also "
            f"in queries, which the model was trained on; a held-out query must be one it never "
            f"saw: drop them from held_out_queries"
        )
    held_out = np.asarray([False] * len(queries) + [True] * len(held_out_queries))
    queries = [*queries, *held_out_queries]
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise DriftInputError(
            f"out_dir {out_dir} is not empty; build the reference into a new folder (a promoted "
            f"version's reference is never rewritten)"
        )
    embedder = OnnxEmbedder.from_export_dir(Path(onnx_dir), precision=precision)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim not in embedder.dims:
        raise DriftInputError(
            f"dim {dim!r} is not served by the export {onnx_dir}; served dims: {list(embedder.dims)}"
        )
    # With the export's prompts, as clients sending input_type query / document are served (service/model/prompts.py).
    query_vectors = embedder.embed(
        apply_prompt(queries, role_prompt(embedder.info.prompts, "query")), dimensions=dim
    )
    corpus_vectors = embedder.embed(
        apply_prompt(corpus_sample, role_prompt(embedder.info.prompts, "document")), dimensions=dim
    )
    query_rows = _describe(embedder, queries)
    corpus_rows = _describe(embedder, corpus_sample)
    spec = reference_spec(
        query_vectors,
        held_out,
        corpus_vectors,
        query_rows,
        dim,
        window_rows,
        precision=precision,
        splits=splits,
        seed=seed,
        alarm_signals=alarm_signals,
        embedder={
            "export_id": embedder.info.export_id,
            "graph_sha256": embedder.info.graph_sha256,
            "precision": precision,
            "max_seq_length": embedder.max_seq_length,
        },
    )
    calibration = spec.calibration
    files = write_reference(
        out_dir, spec, query_vectors, corpus_vectors, query_rows, corpus_rows, held_out, query_texts=queries
    )
    return ReferenceSummary(
        out_dir=str(out_dir),
        files=tuple(path.name for path in files),
        dim=dim,
        precision=precision,
        query_count=len(queries),
        held_out_count=spec.held_out_count,
        corpus_count=len(corpus_sample),
        window_rows=window_rows,
        thresholds={s.name: s.threshold for s in calibration.signals},
        alarm_signals=calibration.alarm_signals,
        excluded=calibration.excluded,
        retrieval_reference_mean=spec.retrieval_reference_mean,
        seconds=round(time.perf_counter() - started, 2),
    )


def _describe(embedder: Any, texts: list[str]) -> list[dict[str, float]]:
    # Token counts before truncation, as the service records them; truncated = longer than the model reads.
    counts = embedder.count_tokens(texts)
    return describe_texts(texts, counts, [count > embedder.max_seq_length for count in counts])


def _check_texts(name: str, texts: Any, minimum: int) -> None:
    if not isinstance(texts, (list, tuple)) or len(texts) < minimum:
        got = (
            f"{type(texts).__name__} of {len(texts)}"
            if isinstance(texts, (list, tuple))
            else repr(texts)[:80]
        )
        raise DriftInputError(f"{name}: expected a list of at least {minimum} strings, got {got}")
    bad = [index for index, text in enumerate(texts) if not isinstance(text, str) or not text.strip()]
    if bad:
        raise DriftInputError(
            f"{name}: entries {bad[:10]} are not non-empty strings (e.g. {texts[bad[0]]!r}); "
            f"drop them before building the reference"
        )
