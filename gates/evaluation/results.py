"""What the quality gate reads: evaluation results per model, backend and dim, and the export's parity record.

    from gates.evaluation.results import EvalResults, ParityRecord
    results = EvalResults.from_json(Path("artifacts/runs/r1/eval/candidate.json").read_text())
    results.mean_metric("ndcg@10", backend="onnx-fp32", dim=256)
    parity = ParityRecord.from_export_json(json.loads(Path("artifacts/runs/r1/onnx/export.json").read_text()))

The evaluation stage writes `EvalResults.to_json()` to eval/candidate.json and eval/baseline.json; the gate
reads them back with `from_json`, so every field is validated on the way in. Backends: onnx-fp32, onnx-int8 (the served graphs) and
torch (the SentenceTransformer itself, for reference). A lookup of a backend, dim or metric that the
evaluation did not produce raises MissingMetricError listing what it did produce.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gates.errors import EmbedgateGateError, MissingMetricError
from gates.evaluation.retrieval_metrics import parse_metric_key

if TYPE_CHECKING:
    from gates.evaluation.retrieval_metrics import RetrievalScores, StsScores

Backend = Literal["onnx-fp32", "onnx-int8", "torch"]
BACKENDS: tuple[str, ...] = ("onnx-fp32", "onnx-int8", "torch")
StsMetric = Literal["spearman", "pearson"]
# Gate metrics of a scored-pairs (STS) evaluation: cosine vs gold score over the held-out pairs. Not per query,
# so their significance is a paired bootstrap over pairs (gates.evaluation.significance.compare_correlations).
CORRELATION_METRICS: tuple[str, ...] = ("spearman", "pearson")
FORMAT_VERSION = 1


class EvalResultsError(EmbedgateGateError):
    """Evaluation results or a parity record do not have the expected shape."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class ModelIdentity(_Frozen):
    """Which model the results belong to, and in which role it was evaluated."""

    label: Literal["candidate", "baseline"]
    name: str = Field(min_length=1)
    path: str | None = None
    # A registry champion as baseline: its version and the fingerprint of its files (Registry.fingerprint), which
    # tells it apart from another registry's v0001. Promotion checks both against the champion it would replace.
    registry_version: str | None = None
    version_fingerprint: str | None = None


class RetrievalResult(_Frozen):
    """Retrieval metrics of one model through one backend at one Matryoshka dim."""

    backend: Backend
    dim: int = Field(gt=0)
    n_queries: int = Field(gt=0)
    mean: dict[str, float] = Field(min_length=1)
    per_query: dict[str, dict[str, float]] = Field(default_factory=dict)  # query id -> metric key -> value

    @field_validator("mean")
    @classmethod
    def _metric_keys(cls, mean: dict[str, float]) -> dict[str, float]:
        for key in mean:
            parse_metric_key(key)
        return mean

    @model_validator(mode="after")
    def _per_query_matches_mean(self) -> RetrievalResult:
        if self.per_query and len(self.per_query) != self.n_queries:
            raise ValueError(
                f"per_query holds {len(self.per_query)} queries but n_queries is {self.n_queries}"
            )
        for qid, values in self.per_query.items():
            if set(values) != set(self.mean):
                raise ValueError(
                    f"per_query[{qid!r}] has metrics {sorted(values)}, "
                    f"expected the keys of mean {sorted(self.mean)}"
                )
        return self

    @classmethod
    def from_scores(cls, backend: Backend, dim: int, scores: RetrievalScores) -> RetrievalResult:
        return cls(
            backend=backend,
            dim=dim,
            n_queries=scores.n_queries,
            mean=dict(scores.mean),
            per_query={qid: dict(values) for qid, values in scores.per_query.items()},
        )


class StsResult(_Frozen):
    """Correlation of cosine similarity with gold scores on a general-domain STS set."""

    backend: Backend
    dim: int = Field(gt=0)
    spearman: float = Field(ge=-1, le=1)
    pearson: float = Field(ge=-1, le=1)
    n_pairs: int = Field(gt=0)

    @classmethod
    def from_scores(cls, backend: Backend, dim: int, scores: StsScores) -> StsResult:
        return cls(backend=backend, dim=dim, **scores.to_dict())


class ScoredPairsResult(_Frozen):
    """Spearman and Pearson of cosine vs gold score on the domain's scored pairs (an STS eval table, e.g. held out
    from STS training data), with the per-pair cosines: the paired bootstrap over pairs resamples them."""

    backend: Backend
    dim: int = Field(gt=0)
    spearman: float = Field(ge=-1, le=1)
    pearson: float = Field(ge=-1, le=1)
    n_pairs: int = Field(ge=3)
    cosine: tuple[float, ...]
    gold: tuple[float, ...]

    @model_validator(mode="after")
    def _one_value_per_pair(self) -> ScoredPairsResult:
        if not len(self.cosine) == len(self.gold) == self.n_pairs:
            raise ValueError(
                f"expected one cosine and one gold score per pair ({self.n_pairs}), got {len(self.cosine)} "
                f"cosines and {len(self.gold)} gold scores"
            )
        return self

    @classmethod
    def from_scores(
        cls, backend: Backend, dim: int, scores: StsScores, gold: Sequence[float]
    ) -> ScoredPairsResult:
        return cls(
            backend=backend,
            dim=dim,
            **scores.to_dict(),
            cosine=scores.cosine,
            gold=tuple(float(g) for g in gold),
        )


class EvalResults(_Frozen):
    """Everything measured for one model: retrieval (IR eval set) or scored pairs (STS eval set) per (backend,
    dim), optional general-domain STS, and who the model is."""

    format_version: Literal[1] = FORMAT_VERSION
    model: ModelIdentity
    retrieval: tuple[RetrievalResult, ...] = ()
    scored_pairs: tuple[ScoredPairsResult, ...] = ()
    sts: tuple[StsResult, ...] = ()

    @model_validator(mode="after")
    def _one_entry_per_backend_and_dim(self) -> EvalResults:
        if not self.retrieval and not self.scored_pairs:
            raise ValueError(
                "expected retrieval results (a BEIR eval set) or scored_pairs results (an STS eval set), got "
                "neither"
            )
        for field_name, entries in (
            ("retrieval", self.retrieval),
            ("scored_pairs", self.scored_pairs),
            ("sts", self.sts),
        ):
            seen: set[tuple[str, int]] = set()
            for entry in entries:
                if (entry.backend, entry.dim) in seen:
                    raise ValueError(
                        f"{field_name} lists {entry.backend} d{entry.dim} twice; "
                        "keep one entry per backend and dim"
                    )
                seen.add((entry.backend, entry.dim))
        return self

    def dims(self, backend: str) -> tuple[int, ...]:
        """Dims evaluated for `backend`, ascending."""
        entries = (*self.retrieval, *self.scored_pairs)
        return tuple(sorted({entry.dim for entry in entries if entry.backend == backend}))

    def available(self) -> str:
        """What was evaluated, for error messages: 'onnx-fp32 d64, d128; onnx-int8 d128 (metrics: ...)'."""
        by_backend = {b: self.dims(b) for b in BACKENDS if self.dims(b)}
        where = "; ".join(f"{b} " + ", ".join(f"d{d}" for d in dims) for b, dims in by_backend.items())
        metrics = sorted({key for entry in self.retrieval for key in entry.mean})
        if self.scored_pairs:
            metrics += CORRELATION_METRICS
        return f"{where} (metrics: {', '.join(metrics)})"

    def retrieval_at(self, backend: str, dim: int) -> RetrievalResult:
        for entry in self.retrieval:
            if entry.backend == backend and entry.dim == dim:
                return entry
        raise MissingMetricError(
            f"the {self.model.label} ({self.model.name}) was not evaluated at {backend} d{dim}; available: "
            f"{self.available()}. Evaluate that backend and dim, or change the check"
        )

    def scored_pairs_at(self, backend: str, dim: int) -> ScoredPairsResult:
        for entry in self.scored_pairs:
            if entry.backend == backend and entry.dim == dim:
                return entry
        raise MissingMetricError(
            f"the {self.model.label} ({self.model.name}) has no scored-pairs (STS eval set) result at {backend} "
            f"d{dim}; available: {self.available()}. Evaluate on an STS table, or gate on a retrieval metric"
        )

    def mean_metric(self, metric: str, backend: str, dim: int) -> float:
        if metric in CORRELATION_METRICS:
            return float(getattr(self.scored_pairs_at(backend, dim), metric))
        entry = self.retrieval_at(backend, dim)
        if metric not in entry.mean:
            raise MissingMetricError(
                f"the {self.model.label} ({self.model.name}) has no {metric} at {backend} d{dim}; available "
                f"there: {', '.join(entry.mean)}. Add it to the evaluation's metrics/ks, or change the check"
            )
        return entry.mean[metric]

    def per_query_metric(self, metric: str, backend: str, dim: int) -> dict[str, float]:
        """Per-query values of one metric: the input of a paired significance test."""
        if metric in CORRELATION_METRICS:
            raise MissingMetricError(
                f"{metric} is one number over all pairs, not a per-query score; compare it with "
                "gates.evaluation.significance.compare_correlations (a paired bootstrap over pairs)"
            )
        self.mean_metric(metric, backend, dim)  # raises with the available metrics if it is missing
        entry = self.retrieval_at(backend, dim)
        if not entry.per_query:
            raise MissingMetricError(
                f"the {self.model.label} ({self.model.name}) has no per-query scores at {backend} d{dim}, "
                "and a significance test needs them; evaluate with per-query output"
            )
        return {qid: values[metric] for qid, values in entry.per_query.items()}

    def sts_metric(self, metric: StsMetric, backend: str, dim: int) -> float:
        for entry in self.sts:
            if entry.backend == backend and entry.dim == dim:
                return float(getattr(entry, metric))
        have = ", ".join(f"{e.backend} d{e.dim}" for e in self.sts) or "none"
        raise MissingMetricError(
            f"the {self.model.label} ({self.model.name}) has no STS result at {backend} d{dim}; "
            f"available: {have}"
        )

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "evaluation results") -> EvalResults:
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise EvalResultsError(
                f"{source}: not valid evaluation results:\n{validation_error_text(err)}"
            ) from None

    @classmethod
    def from_json(cls, text: str, source: str = "evaluation results") -> EvalResults:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise EvalResultsError(
                f"{source}: not JSON ({err}); expected the output of EvalResults.to_json()"
            ) from None
        return cls.from_dict(data, source)


class GraphParity(_Frozen):
    """How closely one exported ONNX graph reproduces the PyTorch model (lowest cosine, probe texts)."""

    backend: Literal["onnx-fp32", "onnx-int8", "onnx-fp16"]  # fp16's parity is to the fp32 graph
    dim: int = Field(gt=0)
    min_cosine: float = Field(ge=-1, le=1.000001)  # float rounding can put a perfect match a hair above 1
    graph: str = ""  # file of the graph, for the report


class ParityRecord(_Frozen):
    """Parity of every exported graph: the input of the gate's `parity` checks."""

    graphs: tuple[GraphParity, ...] = Field(min_length=1)

    def select(self, backend: str, dim: int | None = None) -> tuple[GraphParity, ...]:
        """Graphs of `backend` (all dims, or one); MissingMetricError if there are none."""
        chosen = tuple(g for g in self.graphs if g.backend == backend and (dim is None or g.dim == dim))
        if not chosen:
            have = ", ".join(f"{g.backend} d{g.dim}" for g in self.graphs)
            wanted = f"{backend} d{dim}" if dim is not None else backend
            raise MissingMetricError(
                f"the parity record has no {wanted} graph; it has {have}. "
                "Export that dim, or change the check"
            )
        return chosen

    @classmethod
    def from_export_json(cls, export: Mapping[str, Any], source: str = "export.json") -> ParityRecord:
        """Read the `graphs` list that training.export.export_run writes: path, dim, precision and parity.min_cosine."""
        try:
            graphs = [
                {
                    "backend": f"onnx-{graph['precision']}",
                    "dim": graph["dim"],
                    "min_cosine": graph["parity"]["min_cosine"],
                    "graph": graph.get("path", ""),
                }
                for graph in export["graphs"]
            ]
            return cls.model_validate({"graphs": graphs})
        except (KeyError, TypeError) as err:
            raise EvalResultsError(
                f"{source}: expected "
                "{'graphs': [{'path', 'dim', 'precision', 'parity': {'min_cosine'}}, ...]} "
                f"as written by training.export.export_run; missing or malformed: {err}"
            ) from None
        except ValidationError as err:
            raise EvalResultsError(
                f"{source}: not a valid parity record:\n{validation_error_text(err)}"
            ) from None


def validation_error_text(err: ValidationError, limit: int = 8) -> str:
    """One line per problem: where (dotted path with [index]), what is wrong, and the value that arrived."""
    lines = []
    for problem in err.errors()[:limit]:
        where = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in problem["loc"]
        ).lstrip(".")
        message = problem["msg"].removeprefix("Value error, ")
        got = "" if problem["type"] == "missing" else f" (got {_short_repr(problem['input'])})"
        lines.append(f"  {where or '(top level)'}: {message}{got}")
    if err.error_count() > limit:
        lines.append(f"  ... and {err.error_count() - limit} more")
    return "\n".join(lines)


def _short_repr(value: Any, width: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."
