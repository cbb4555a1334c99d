"""Evaluate a run's exported artifacts against a baseline on the same data, in the same run.

    embedgate evaluate artifacts/runs/<run_id> --data path/to/scifact --split test   # a BEIR folder
    embedgate evaluate artifacts/runs/<run_id> --data heldout/eval.jsonl              # an STS table

Candidate: the run's ONNX export through the service's embedder (fp32 and int8, every dim), plus the PyTorch
model for reference. Baseline: the registry's champion (its served ONNX artifacts) or, when there is none, the base
model exported the same way into the run (`baseline/onnx`), so both sides go through the identical code path and
nothing is taken from stale numbers. Exact search over the whole corpus; per-query scores are kept because the
gate's significance test is paired over queries. An STS table (sentence1, sentence2, score) as the eval set is
scored the same way, every dim through the same graphs: Spearman and Pearson of cosine vs gold score, with the
per-pair cosines kept for the gate's paired bootstrap over pairs.

Writes eval/candidate.json and eval/baseline.json (gates.evaluation.results.EvalResults), eval/summary.md (a table),
eval/metrics_vs_dim.png, eval/timings.json.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from gates.errors import EmbedgateGateError, RunDirectoryError
from gates.evaluation.encoders import Encoder, onnx_encoder, torch_encoder
from gates.evaluation.results import (
    BACKENDS,
    EvalResults,
    ModelIdentity,
    RetrievalResult,
    ScoredPairsResult,
    StsResult,
)
from gates.evaluation.retrieval_metrics import evaluate_run, sts_correlations, top_k_run
from service.model.embedder import truncate_dims
from service.model.prompts import apply_prompt, role_prompt
from training.embedding_cache import EmbeddingCache
from training.run_dir import RunPaths, write_json_atomic

KS = (1, 5, 10, 100)
QUERY_CHUNK = 512  # rows of the score matrix at a time: bounds memory for large corpora


@dataclass(frozen=True)
class StsSet:
    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]
    name: str


@dataclass(frozen=True)
class Baseline:
    name: str
    encoders: tuple[Encoder, ...]
    path: str
    registry_version: str | None = None  # the champion's version; None for the base model
    version_fingerprint: str | None = None  # Registry.fingerprint of that version


@dataclass(frozen=True)
class EvaluationOutcome:
    candidate: EvalResults
    baseline: EvalResults
    timings: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    cache: dict | None = None  # hits, misses, encoded_texts, lookups (None: no cache)

    def to_dict(self) -> dict:
        return {"timings": self.timings, "files": self.files}


def score_encoder(
    encoder: Encoder,
    query_ids: list[str],
    queries: list[str],
    doc_ids: list[str],
    docs: list[str],
    qrels: dict[str, dict[str, int]],
    dims: tuple[int, ...],
    sts: StsSet | None,
    timings: dict[str, float],
    label: str,
    cache: EmbeddingCache | None = None,
    quiet: bool = False,
):
    """Encode once at full dim (through the cache when one is given); score every dim by truncation.
    -> (retrieval results, sts results)."""
    started = time.perf_counter()
    embed = _embedder(encoder, cache, label, quiet)
    # Each side with the prompt its export serves with (none when it has none), as clients will send it; the
    # prompted texts are what the cache keys on.
    query_prompt = role_prompt(encoder.prompts, "query")
    if query_ids:  # none when the eval set is scored pairs (score_pairs) and only general STS is scored here
        q_full = embed(apply_prompt(queries, query_prompt), "queries")
        d_full = embed(apply_prompt(docs, role_prompt(encoder.prompts, "document")), "corpus")
    # STS is a symmetric task: both sides are queries.
    sts_full = (
        (
            embed(apply_prompt(sts.sentences1, query_prompt), "sts1"),
            embed(apply_prompt(sts.sentences2, query_prompt), "sts2"),
        )
        if sts is not None
        else None
    )
    timings[f"{label}/{encoder.backend}/encode_s"] = round(time.perf_counter() - started, 2)
    retrieval, sts_results = [], []
    for dim in dims:
        if query_ids:
            retrieval.append(_retrieval_at(encoder.backend, dim, q_full, d_full, query_ids, doc_ids, qrels))
        if sts_full is not None:
            a, b = truncate_dims(sts_full[0], dim), truncate_dims(sts_full[1], dim)
            sts_results.append(
                StsResult.from_scores(encoder.backend, dim, sts_correlations(a, b, sts.scores))
            )
    return retrieval, sts_results


def _retrieval_at(backend, dim, q_full, d_full, query_ids, doc_ids, qrels) -> RetrievalResult:
    q, d = truncate_dims(q_full, dim), truncate_dims(d_full, dim)
    run: dict[str, dict[str, float]] = {}
    for start in range(0, len(query_ids), QUERY_CHUNK):
        chunk = q[start : start + QUERY_CHUNK] @ d.T
        run.update(top_k_run(query_ids[start : start + QUERY_CHUNK], doc_ids, chunk, k=max(KS)))
    return RetrievalResult.from_scores(backend, dim, evaluate_run(qrels, run, ks=KS))


def score_pairs(
    encoder: Encoder,
    pairs: StsSet,
    dims: tuple[int, ...],
    timings: dict[str, float],
    label: str,
    cache: EmbeddingCache | None = None,
    quiet: bool = False,
) -> list[ScoredPairsResult]:
    """The domain's scored pairs (an STS eval set): cosine vs gold at every dim, per-pair cosines kept. Both
    sentences get the query prompt (a symmetric task, as the general STS set and as training did)."""
    started = time.perf_counter()
    embed = _embedder(encoder, cache, label, quiet)
    prompt = role_prompt(encoder.prompts, "query")
    first = embed(apply_prompt(pairs.sentences1, prompt), "pairs1")
    second = embed(apply_prompt(pairs.sentences2, prompt), "pairs2")
    timings[f"{label}/{encoder.backend}/pairs_encode_s"] = round(time.perf_counter() - started, 2)
    return [
        ScoredPairsResult.from_scores(
            encoder.backend,
            dim,
            sts_correlations(truncate_dims(first, dim), truncate_dims(second, dim), pairs.scores),
            pairs.scores,
        )
        for dim in dims
    ]


def _embedder(encoder: Encoder, cache: EmbeddingCache | None, label: str, quiet: bool = False):
    """texts, what -> full-dim vectors: from the cache when the encoder has an identity, else encoded now (under a
    progress bar with texts/s and ETA on a terminal)."""
    from training.finetune.progress import encode_with_bar

    def embed(texts: list[str], what: str):
        def encode(batch):
            return encode_with_bar(encoder.encode, batch, f"{label} {encoder.backend} {what}", quiet=quiet)

        if cache is None or not encoder.identity:
            return encode(texts)
        return cache.encode(
            texts,
            model=encoder.identity,
            backend=encoder.backend,
            dim=encoder.full_dim,
            encode=encode,
            label=f"{label}/{encoder.backend}/{what}",
        )

    return embed


def evaluate_model(
    label: str,
    name: str,
    path: str,
    encoders: tuple[Encoder, ...],
    split,
    dims: tuple[int, ...],
    sts: StsSet | None,
    timings: dict[str, float],
    cache: EmbeddingCache | None = None,
    quiet: bool = False,
    pairs: StsSet | None = None,
    registry_version: str | None = None,
    version_fingerprint: str | None = None,
) -> EvalResults:
    """Retrieval on `split` (a BEIR split view), or, with `split` None, scored `pairs` (an STS eval set).
    `registry_version`/`version_fingerprint`: which registry version the model is, when it is one."""
    qrels = {q: docs for q, docs in split.qrels.items() if q in split.queries} if split is not None else {}
    query_ids = sorted(qrels)
    doc_ids = sorted(split.corpus) if split is not None else []
    queries = [split.queries[q] for q in query_ids]
    docs = [split.corpus[d] for d in doc_ids]
    retrieval, scored, sts_results = [], [], []
    for encoder in encoders:
        usable = tuple(d for d in dims if d <= encoder.full_dim)
        r, s = score_encoder(
            encoder, query_ids, queries, doc_ids, docs, qrels, usable, sts, timings, label, cache, quiet
        )
        retrieval += r
        sts_results += s
        if pairs is not None:
            scored += score_pairs(encoder, pairs, usable, timings, label, cache, quiet)
    return EvalResults(
        model=ModelIdentity(
            label=label,
            name=name,
            path=path,
            registry_version=registry_version,
            version_fingerprint=version_fingerprint,
        ),
        retrieval=tuple(retrieval),
        scored_pairs=tuple(scored),
        sts=tuple(sts_results),
    )


def candidate_encoders(
    run: RunPaths, backends: tuple[str, ...], device: str = "cpu", onnx_device: str | None = None
) -> tuple[Encoder, ...]:
    unknown = [backend for backend in backends if backend not in BACKENDS]
    if unknown or not backends:
        raise EmbedgateGateError(
            f"backends: expected one or more of {', '.join(BACKENDS)}, got "
            f"{list(backends)}; e.g. --backends onnx-fp32,onnx-int8,torch"
        )
    if not (run.onnx / "embedder.json").is_file():
        raise RunDirectoryError(
            f"{run.root} has no ONNX export (onnx/embedder.json missing); run "
            f"`embedgate export {run.root}` first"
        )
    encoders = []
    for backend in backends:
        if backend == "torch":
            if not (run.model / "modules.json").is_file():
                raise RunDirectoryError(f"{run.model}: no trained model to evaluate as the torch reference")
            export = json.loads((run.onnx / "embedder.json").read_text())
            encoders.append(
                torch_encoder(run.model, export["dims"], export.get("prompts"), device)
            )  # as served
        else:
            encoders.append(
                onnx_encoder(run.onnx, backend.removeprefix("onnx-"), device=onnx_device or device)
            )
    return tuple(encoders)


def resolve_baseline(
    run: RunPaths,
    base_model: str,
    registry_root: Path | None,
    backends: tuple[str, ...] = ("onnx-fp32",),
    prompts: dict | None = None,
    device: str = "cpu",
    cache_dir: Path | None = None,
) -> Baseline:
    """The current champion's served artifacts (with the prompts it serves with), else the base model exported into
    the run the same way, with the run's prompts (`prompts`; None = the base model's own), from
    `cache_dir`/exports when the same base model was exported before (same folder, dims, precisions, prompts)."""
    if registry_root is not None:
        from service.registry.registry import Registry

        registry = Registry(registry_root)
        champion = registry.champion()
        if champion is not None:
            registry.verify(champion.version)
            onnx_dir = registry.version_dir(champion.version) / "onnx"
            encoders = tuple(onnx_encoder(onnx_dir, b.removeprefix("onnx-"), device=device) for b in backends)
            return Baseline(
                f"champion {champion.version}",
                encoders,
                str(onnx_dir),
                champion.version,
                registry.fingerprint(champion.version),
            )
    from training.export.export_run import export_run
    from training.models import resolve_model_path

    base_dir = resolve_model_path(base_model)
    out = run.root / "baseline" / "onnx"
    int8 = "onnx-int8" in backends
    if not (out / "embedder.json").is_file():
        if cache_dir is None:
            export_run(base_dir, out, dims=None, int8=int8, prompts=prompts)
        else:
            _copy_cached_export(base_dir, out, int8, cache_dir, prompts)
    encoders = tuple(onnx_encoder(out, b.removeprefix("onnx-"), device=device) for b in backends)
    return Baseline(f"base model {base_model}", encoders, str(out))


def _copy_cached_export(
    base_dir: Path, out: Path, int8: bool, cache_dir: Path, prompts: dict | None = None
) -> None:
    """Export the base model once per (model folder sha256, precisions, prompts) into the cache, then copy it into
    the run: the run stays self-contained and the graph bytes (hence the embedding cache's key) stay the same."""
    import hashlib
    import json
    import shutil

    from gates.cache_prune import mark_export_used
    from training.embedding_cache import folder_fingerprint
    from training.export.export_run import export_run

    # The prompts are recorded in the export (embedder.json), so exports with other prompts are other entries.
    prompted = (
        hashlib.sha256(json.dumps(prompts, sort_keys=True).encode()).hexdigest()[:8] if prompts else "own"
    )
    name = f"{folder_fingerprint(base_dir)[:32]}-{'int8' if int8 else 'fp32'}-{prompted}"
    exported = Path(cache_dir) / "exports" / name
    if not (exported / "embedder.json").is_file():
        shutil.rmtree(exported, ignore_errors=True)  # a half-copied folder from an interrupted run
        export_run(base_dir, exported, dims=None, int8=int8, prompts=prompts)
    mark_export_used(exported)  # its last use, for gates/cache_prune.py's LRU
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(exported, staging)
    staging.replace(out)


def run_evaluation(
    run: RunPaths,
    data_path: Path,
    split: str = "test",
    *,
    registry_root: Path | None = None,
    base_model: str | None = None,
    backends: tuple[str, ...] = ("onnx-fp32", "onnx-int8", "torch"),
    baseline_backends: tuple[str, ...] = ("onnx-fp32",),
    sts: StsSet | None = None,
    cache_dir: Path | None = None,
    device: str = "cpu",
    onnx_device: str | None = None,
    quiet: bool = False,
) -> EvaluationOutcome:
    """Score the candidate's backends and the baseline on `split`; with `cache_dir`, embeddings (and the base
    model's export) are kept there and reused by the next run that asks for the same thing. `device`: torch's
    (cpu, cuda:N); `onnx_device`: onnxruntime's (cpu, cuda[:N], auto; default the same as `device`)."""
    onnx_device = onnx_device or device
    from training.config import load_config

    view, pairs = load_eval_set(data_path, split)
    encoders = candidate_encoders(run, backends, device, onnx_device)
    # Every backend reads the export's dims (torch takes them from embedder.json), so `--backends torch` alone
    # still has dims to score.
    dims = tuple(sorted(set().union(*(e.dims for e in encoders)), reverse=True))
    config = load_config(run.config)
    base_model = base_model or config.base_model
    prompts = config.prompts.model_dump() if config.prompts else None
    baseline = resolve_baseline(
        run, base_model, registry_root, baseline_backends, prompts, onnx_device, cache_dir
    )
    cache = EmbeddingCache(Path(cache_dir) / "embeddings") if cache_dir is not None else None
    timings: dict[str, float] = {}
    candidate = evaluate_model(
        "candidate", run.run_id, str(run.root), encoders, view, dims, sts, timings, cache, quiet, pairs
    )
    base = evaluate_model(
        "baseline",
        baseline.name,
        baseline.path,
        baseline.encoders,
        view,
        dims,
        sts,
        timings,
        cache,
        quiet,
        pairs,
        baseline.registry_version,
        baseline.version_fingerprint,
    )
    run.eval.mkdir(parents=True, exist_ok=True)
    files = {"candidate": run.eval / "candidate.json", "baseline": run.eval / "baseline.json"}
    for key, results in (("candidate", candidate), ("baseline", base)):
        tmp = files[key].with_suffix(".json.tmp")
        tmp.write_text(results.to_json(), encoding="utf-8")
        tmp.replace(files[key])
    from gates.evaluation.report import plot_metric_vs_dim, summary_table

    (run.eval / "summary.md").write_text(summary_table(candidate, base, data_path, split), encoding="utf-8")
    plot_metric_vs_dim(candidate, base, run.eval / "metrics_vs_dim.png")
    write_json_atomic(run.eval / "timings.json", timings)
    if cache is not None:
        write_json_atomic(run.eval / "cache.json", {"folder": str(cache.folder), **cache.stats.to_dict()})
    return EvaluationOutcome(
        candidate,
        base,
        timings,
        {k: str(v) for k, v in files.items()}
        | {"summary": str(run.eval / "summary.md"), "plot": str(run.eval / "metrics_vs_dim.png")},
        cache.stats.to_dict() if cache is not None else None,
    )


def load_eval_set(data_path: Path, split: str = "test"):
    """The eval set: a BEIR folder -> (its `split` view, None); an STS table (sentence1, sentence2, score; a file,
    a save_to_disk folder or hf://) -> (None, its pairs). Anything else is refused, saying what is accepted."""
    from training.data.formats import DatasetType
    from training.data.hf_datasets import is_hf_source
    from training.data.loading import dataset_type_of, load_dataset

    if Path(data_path).is_dir() and not is_hf_source(data_path):
        view = load_dataset(data_path, "ir").split(split)
        if not view.queries:
            raise RunDirectoryError(
                f"{data_path}: split {split!r} has no judged query with a text in queries.jsonl"
            )
        return view, None
    data = load_dataset(data_path)
    kind = dataset_type_of(data)
    if kind is not DatasetType.STS:
        raise RunDirectoryError(
            f"{data_path}: expected a BEIR folder (retrieval) or an STS table (sentence1, sentence2, score) to "
            f"evaluate on, got a {kind.value} table; give a BEIR folder with judged queries, or scored pairs"
        )
    return None, _sts_set(data, None, Path(str(data_path)).name)


def load_sts_set(path: Path, limit: int | None = None, exclude: set[str] | None = None) -> StsSet:
    """A general-domain STS table (sentence1, sentence2, score 0-5), e.g. STS-B test. `exclude`: sentences the
    model was fitted on (the rotation's general texts): rows with either sentence in it are left out, so the check
    measures text the fit never saw."""
    from training.data.loading import load_dataset

    return _sts_set(load_dataset(path, "sts"), limit, Path(path).name, exclude)


def _sts_set(data, limit: int | None, name: str, exclude: set[str] | None = None) -> StsSet:
    frame = data.frame[["sentence1", "sentence2", "score"]].dropna()
    if exclude:
        frame = frame[~(frame["sentence1"].isin(exclude) | frame["sentence2"].isin(exclude))]
    if limit:
        frame = frame.head(limit)
    return StsSet(
        frame["sentence1"].tolist(),
        frame["sentence2"].tolist(),
        frame["score"].astype(float).tolist(),
        name,
    )
