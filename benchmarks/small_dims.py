"""Small Matryoshka dims across domains (issue 17, part 1): no transform vs today's rotation vs a Matryoshka-Adaptor.

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/small_dims.py --sets legal medical scifact mediqa \
        --shared ../shared/datasets --work artifacts/small_dims --out benchmarks/results

Everything is post-hoc on frozen embeddings: each set's corpus and queries are encoded once by the model (cached in
--work as .npy, so a rerun encodes nothing) and every transform is fitted and scored on those vectors. For each set:
- the training queries are split into fit and dev exactly as training does (training.finetune.prepare.dev_size, 10% raised
  to 50 queries); transforms see the corpus, the fit queries and (for decisions) the dev queries, never the test;
- systems: `none`; `pca` (the rotation's PCA start); `rotation` (today's default chain, training.matryoshka.rotation.
  decide_rotation: PCA, refined on the pairs with dev early stopping, each step kept only beyond dev noise;
  the default before the adaptor candidate);
  `adaptor` (training.matryoshka.adaptor, similarity-preserving terms only, fixed steps, no dev); `adaptor+rank`
  (plus the ranking term on the fit pairs); `rotation+adaptor+rank` (the same, started from `rotation`'s matrix);
  `decided` (the default since stop 23: `rotation`'s chain with `rotation+adaptor+rank` as a last candidate, kept
  only beyond dev noise with no dim losing beyond noise); `rotation` is that chain with `adaptor="off"`;
- test: every test query against the whole corpus (graded NDCG@10, linear gain, as BEIR), at 384/256/128/64, with
  the retention 64/384 and 128/384 of the same system and the paired 95% bootstrap interval of the 64d gain
  over `rotation`.
Sets: `legal` (training/data/legal_lay), `medical` (the Curai pairs as IR, benchmarks/medical_ir.py), `scifact`
(BEIR; --scifact-corpus N keeps every judged document plus a seeded sample up to N), `mediqa` (MEDIQA RQE as IR:
queries = consumer questions, corpus = every FAQ question, qrels = the entailed pairs; train+validation -> train,
test -> test; at most --max-train training queries). Writes small_dims.json and small_dims.md under --out.
Development only: needs ../shared for all sets but legal.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DIMS = (384, 256, 128, 64)
REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- data: (corpus ids->text, queries, train, test)
def _beir(root: Path):
    corpus = {}
    for line in open(root / "corpus.jsonl", encoding="utf-8"):
        if line.strip():
            row = json.loads(line)
            title, text = str(row.get("title") or "").strip(), str(row.get("text") or "").strip()
            corpus[str(row["_id"])] = f"{title}. {text}" if title and text else (title or text)
    queries = {}
    for line in open(root / "queries.jsonl", encoding="utf-8"):
        if line.strip():
            row = json.loads(line)
            queries[str(row["_id"])] = str(row["text"])
    splits = {}
    for split in ("train", "test"):
        qrels: dict[str, dict[str, int]] = {}
        with open(root / "qrels" / f"{split}.tsv", encoding="utf-8") as handle:
            next(handle)
            for line in handle:
                q, d, score = line.rstrip("\n").split("\t")[:3]
                if int(score) > 0 and d in corpus:
                    qrels.setdefault(q, {})[d] = int(score)
        splits[split] = qrels
    return corpus, queries, splits["train"], splits["test"]


def _scifact(shared: Path, keep: int | None, seed: int = 0):
    corpus, queries, train, test = _beir(shared / "scifact")
    if keep and keep < len(corpus):
        judged = {d for qrels in (train, test) for rel in qrels.values() for d in rel}
        others = sorted(set(corpus) - judged)
        rng = np.random.default_rng(seed)
        room = max(0, keep - len(judged))
        sample = set(
            np.asarray(others)[rng.choice(len(others), min(room, len(others)), replace=False)].tolist()
        )
        corpus = {d: t for d, t in corpus.items() if d in judged or d in sample}
    return corpus, queries, train, test


def _medical(shared: Path):
    from benchmarks.medical_ir import build

    with tempfile.TemporaryDirectory() as tmp:
        build(shared / "medical-question-pairs" / "pairs.csv", Path(tmp))
        return _beir(Path(tmp))


def _mediqa(shared: Path, max_train: int, seed: int = 0):
    rows = {}
    for split, name in (("train", "train.csv"), ("train", "validation.csv"), ("test", "test.csv")):
        with open(shared / "mediqa-rqe" / name, encoding="utf-8", newline="") as handle:
            rows[name] = [(split, r) for r in csv.DictReader(handle)]
    every = [x for part in rows.values() for x in part]
    faqs = sorted({r["faq"].strip() for _, r in every})
    corpus = {f"d{i}": t for i, t in enumerate(faqs)}
    doc_id = {t: d for d, t in corpus.items()}
    queries, qid = {}, {}
    splits: dict[str, dict[str, dict[str, int]]] = {"train": {}, "test": {}}
    for split, r in every:
        if str(r["label"]).strip().lower() not in ("1", "true"):
            continue
        text = r["chq"].strip()
        if text not in qid:
            qid[text] = f"q{len(qid)}"
            queries[qid[text]] = text
        splits[split].setdefault(qid[text], {})[doc_id[r["faq"].strip()]] = 1
    test_texts = {queries[q] for q in splits["test"]}
    train = {q: rel for q, rel in splits["train"].items() if queries[q] not in test_texts}
    if len(train) > max_train:
        keep = np.random.default_rng(seed).choice(sorted(train), max_train, replace=False)
        train = {q: train[q] for q in sorted(keep)}
    return corpus, queries, train, splits["test"]


def load_set(name: str, shared: Path, args):
    if name == "legal":
        return _beir(REPO / "training" / "data" / "legal_lay")
    if name == "medical":
        return _medical(shared)
    if name == "scifact":
        return _scifact(shared, args.scifact_corpus)
    if name == "mediqa":
        return _mediqa(shared, args.max_train)
    raise SystemExit(f"unknown set {name!r}; expected legal, medical, scifact or mediqa")


# ---------------------------------------------------------------- encoding (once, cached)
def encoder(model_ref: str, work: Path):
    import torch

    from training.models import load_sentence_transformer, resolve_model_path

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model = load_sentence_transformer(model_ref)
    tag = hashlib.sha256(str(resolve_model_path(model_ref)).encode()).hexdigest()[:10]
    work.mkdir(parents=True, exist_ok=True)

    def encode(texts: list[str], role: str) -> np.ndarray:
        digest = hashlib.sha256("\x00".join([role, *texts]).encode()).hexdigest()[:16]
        path = work / f"{tag}_{role}_{digest}.npy"
        if path.is_file():
            return np.load(path)
        started = time.perf_counter()
        method = model.encode_query if role == "query" else model.encode_document
        vectors = method(texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True)
        vectors = np.asarray(vectors, dtype=np.float32)
        np.save(path.with_suffix(".tmp.npy"), vectors)
        os.replace(path.with_suffix(".tmp.npy"), path)
        print(f"  encoded {len(texts)} {role} texts in {time.perf_counter() - started:.0f}s", flush=True)
        return vectors

    return encode, model.get_embedding_dimension()


def finetune(base: str, pairs: list[tuple[str, str]], epochs: float, out: Path, seed: int = 0) -> str:
    """A short fine-tune on the fit pairs only (the tuned recipe: MatryoshkaLoss over MNRL, batch 32, lr 5e-5,
    warmup 10%), saved to `out`; reused when `out` already holds a model."""
    if (out / "modules.json").is_file():
        return str(out)
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer import losses

    from training.models import load_sentence_transformer

    model = load_sentence_transformer(base)
    loss = losses.MatryoshkaLoss(model, losses.MultipleNegativesRankingLoss(model), list(DIMS))
    rows = Dataset.from_dict({"anchor": [a for a, _ in pairs], "positive": [p for _, p in pairs]})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out.with_suffix(".tmp")),
        num_train_epochs=epochs,
        per_device_train_batch_size=32,
        learning_rate=5e-5,
        warmup_ratio=0.1,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        save_strategy="no",
        report_to="none",
        seed=seed,
        disable_tqdm=True,
        use_cpu=True,
    )
    started = time.perf_counter()
    SentenceTransformerTrainer(model=model, args=args, train_dataset=rows, loss=loss).train()
    model.save(str(out), safe_serialization=True)
    print(f"  fine-tuned on {len(pairs)} pairs in {time.perf_counter() - started:.0f}s", flush=True)
    return str(out)


# ---------------------------------------------------------------- scoring
def ndcg_at_10(query_emb, doc_emb, qrels: list[dict[int, int]], dim: int) -> np.ndarray:
    """Graded NDCG@10 (linear gain) per query: every query against every document, the first `dim` values."""
    q = query_emb[:, :dim] / np.linalg.norm(query_emb[:, :dim], axis=1, keepdims=True)
    d = doc_emb[:, :dim] / np.linalg.norm(doc_emb[:, :dim], axis=1, keepdims=True)
    scores = q @ d.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    discount = 1.0 / np.log2(np.arange(2, 12))
    out = np.zeros(len(qrels))
    for i, (row, rel) in enumerate(zip(top, qrels, strict=True)):
        dcg = sum(rel.get(int(doc), 0) * discount[r] for r, doc in enumerate(row))
        ideal = sorted(rel.values(), reverse=True)[:10]
        out[i] = dcg / float(np.dot(ideal, discount[: len(ideal)])) if ideal else 0.0
    return out


def bootstrap_low_high(diff: np.ndarray, seed: int = 0, resamples: int = 2000) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (resamples, len(diff)))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def serving_dim(per_dim: dict[int, np.ndarray], fraction: float, margin: float, seed: int) -> int:
    """gates.quality_gate.decision.resolve_serving_dim's rule on per-query scores: the smallest dim keeping
    `fraction` of the full dim with the lower 95% bound of mean(dim - (fraction - margin) * full) >= 0."""
    full = per_dim[max(per_dim)]
    for dim in sorted(per_dim):
        if dim == max(per_dim):
            return dim
        if per_dim[dim].mean() >= fraction * full.mean():
            if bootstrap_low_high(per_dim[dim] - (fraction - margin) * full, seed)[0] >= 0:
                return dim
    return max(per_dim)


# ---------------------------------------------------------------- one set
def run_set(name: str, shared: Path, args) -> dict:
    from training.finetune.prepare import dev_size
    from training.matryoshka.adaptor import learn_adaptor
    from training.matryoshka.rotation import RotationData, decide_rotation, fit_rotation

    corpus, queries, train, test = load_set(name, shared, args)
    doc_ids = sorted(corpus)
    doc_texts = [corpus[d] for d in doc_ids]
    row = {d: i for i, d in enumerate(doc_ids)}
    train_ids = sorted(q for q in train if q in queries)
    test_ids = sorted(q for q in test if q in queries)
    rng = np.random.default_rng(args.seed)
    n_dev = dev_size(len(train_ids), 0.1)
    dev_ids = set(rng.choice(train_ids, n_dev, replace=False).tolist())
    fit_ids = [q for q in train_ids if q not in dev_ids]
    print(
        f"{name}: {len(doc_texts)} docs, {len(fit_ids)} fit / {len(dev_ids)} dev / {len(test_ids)} test queries",
        flush=True,
    )
    labelled = {queries[q]: {corpus[d] for d in train[q]} for q in train_ids}
    pairs = [(queries[q], corpus[d]) for q in fit_ids for d in sorted(train[q])]
    model = args.model
    if args.finetune_epochs:
        model = finetune(model, pairs, args.finetune_epochs, args.work / f"ft_{name}_{args.finetune_epochs}")
    encode, full = encoder(model, args.work)
    started = time.perf_counter()
    doc_emb = encode(doc_texts, "document")
    train_emb = encode([queries[q] for q in train_ids], "query")
    test_emb = encode([queries[q] for q in test_ids], "query")
    encode_seconds = time.perf_counter() - started
    vectors = {("document", t): v for t, v in zip(doc_texts, doc_emb, strict=True)}
    vectors |= {("query", queries[q]): v for q, v in zip(train_ids, train_emb, strict=True)}

    def cached(texts, role):  # decide_rotation's encoder: every text it asks for was encoded above
        return np.stack([vectors[(role, t)] for t in texts]) if texts else np.zeros((0, full), np.float32)

    dims = list(DIMS)
    timings = {"encode_s": round(encode_seconds, 1)}

    data = RotationData(doc_texts, pairs, labelled, [queries[q] for q in sorted(dev_ids)])
    t = time.perf_counter()
    matrix, decision = decide_rotation(cached, full, data, dims, adaptor="off")
    timings["rotation_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    decided, decided_reason = decide_rotation(cached, full, data, dims, adaptor="auto")
    timings["decided_s"] = round(time.perf_counter() - t, 1)
    # The same chain with its learned steps judged on the dev queries alone (the rule before cross-fitting, issue 30):
    # crossfit.MIN_QUERIES raised past any set, so no set cross-fits.
    import training.matryoshka.crossfit as crossfit

    t, saved, crossfit.MIN_QUERIES = time.perf_counter(), crossfit.MIN_QUERIES, 10**9
    try:
        decided_dev, decided_dev_reason = decide_rotation(cached, full, data, dims, adaptor="auto")
    finally:
        crossfit.MIN_QUERIES = saved
    timings["decided_dev_s"] = round(time.perf_counter() - t, 1)
    fit_rows = [train_ids.index(q) for q in fit_ids]
    fit_emb = train_emb[fit_rows]
    pca = fit_rotation(np.vstack([doc_emb, fit_emb]))
    anchors = np.stack([vectors[("query", a)] for a, _ in pairs])
    positives = np.array([row[d] for q in fit_ids for d in sorted(train[q])])
    texts = np.vstack([doc_emb, fit_emb])
    systems = {"none": np.eye(full, dtype=np.float32), "pca": pca}
    systems["rotation"] = matrix if matrix is not None else systems["none"]
    t = time.perf_counter()
    systems["adaptor"] = learn_adaptor(pca, texts, dims, seed=args.seed, steps=args.steps).matrix
    timings["adaptor_s"] = round(time.perf_counter() - t, 1)
    systems["adaptor+rank"] = learn_adaptor(
        pca,
        texts,
        dims,
        anchors,
        positives,
        doc_emb,
        rank_weight=args.rank_weight,
        seed=args.seed,
        steps=args.steps,
    ).matrix
    # The two together: the adaptor (with the ranking term) started from today's rotation choice instead of PCA.
    systems["rotation+adaptor+rank"] = learn_adaptor(
        systems["rotation"],
        texts,
        dims,
        anchors,
        positives,
        doc_emb,
        rank_weight=args.rank_weight,
        seed=args.seed,
        steps=args.steps,
    ).matrix
    # Today's default: the rotation chain with the adaptor as a dev-decided last candidate (training.matryoshka.rotation).
    systems["decided"] = decided if decided is not None else systems["none"]
    systems["decided, dev-judged"] = decided_dev if decided_dev is not None else systems["none"]
    test_rel = [{row[d]: g for d, g in test[q].items()} for q in test_ids]
    dev_list = sorted(dev_ids)
    dev_emb = train_emb[[train_ids.index(q) for q in dev_list]]
    dev_rel = [{row[d]: g for d, g in train[q].items()} for q in dev_list]
    results = {}
    for system, w in systems.items():
        q, d = test_emb @ w.T, doc_emb @ w.T
        per_dim = {dim: ndcg_at_10(q, d, test_rel, dim) for dim in DIMS}
        dev_q = dev_emb @ w.T
        results[system] = {
            "dev_ndcg@10": {
                str(dim): round(float(ndcg_at_10(dev_q, d, dev_rel, dim).mean()), 4) for dim in DIMS
            },
            "ndcg@10": {str(dim): round(float(v.mean()), 4) for dim, v in per_dim.items()},
            "retention_64": round(float(per_dim[64].mean() / per_dim[384].mean()), 4),
            "retention_128": round(float(per_dim[128].mean() / per_dim[384].mean()), 4),
            "_per_query": per_dim,
        }
    for system in results:  # paired 95% interval of the test gain over today's rotation, at 64d and 384d
        for dim in (64, 384):
            diff = results[system]["_per_query"][dim] - results["rotation"]["_per_query"][dim]
            low, high = bootstrap_low_high(diff, args.seed)
            results[system][f"vs_rotation_{dim}"] = {
                "mean": round(float(diff.mean()), 4),
                "low": round(low, 4),
                "high": round(high, 4),
            }
    for system in results:  # what the gate's auto serving dim would pick on these test queries
        per_dim = results[system]["_per_query"]
        results[system]["serving_dim"] = {
            f"margin_{margin}": serving_dim(per_dim, 0.99, margin, args.seed) for margin in (0.0, 0.02)
        }
        del results[system]["_per_query"]
    return {
        "set": name,
        "model": model,
        "docs": len(doc_texts),
        "fit_queries": len(fit_ids),
        "dev_queries": len(dev_ids),
        "test_queries": len(test_ids),
        "rotation_decision": decision.reason,
        "decided": decided_reason.reason,
        "decided_evidence": decided_reason.evidence,
        "decided_dev_judged": decided_dev_reason.reason,
        "timings": timings,
        "systems": results,
    }


def table(runs: list[dict]) -> str:
    lines = [
        "| set | system | 384 | 256 | 128 | 64 | 64/384 | 128/384 | 64d vs rotation (95% CI) | 384d vs rotation | "
        "dev 64 / 128 / 384 | serving dim, margin 0 / 0.02 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        for system, r in run["systems"].items():
            n, g, f, dev = r["ndcg@10"], r["vs_rotation_64"], r["vs_rotation_384"], r["dev_ndcg@10"]
            lines.append(
                f"| {_label(run)} | {system} | {n['384']:.4f} | {n['256']:.4f} | {n['128']:.4f} | {n['64']:.4f} | "
                f"{r['retention_64']:.1%} | {r['retention_128']:.1%} | "
                f"{g['mean']:+.4f} [{g['low']:+.4f}, {g['high']:+.4f}] | {f['mean']:+.4f} | "
                f"{dev['64']:.3f} / {dev['128']:.3f} / {dev['384']:.3f} | "
                f"{_serving(r)} |"
            )
    return "\n".join(lines)


def _label(run: dict) -> str:
    model = run.get("model", "all-MiniLM-L6-v2")
    return run["set"] if model == "all-MiniLM-L6-v2" else f"{run['set']} ({Path(model).name})"


def _serving(result: dict) -> str:
    chosen = result.get("serving_dim")  # absent from results written before the column existed
    return f"{chosen['margin_0.0']} / {chosen['margin_0.02']}" if chosen else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["legal", "medical", "scifact", "mediqa"])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--work", type=Path, default=REPO / "artifacts" / "small_dims")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--tag", default="", help="suffix of the result files (e.g. the model)")
    parser.add_argument(
        "--scifact-corpus", type=int, default=None, help="keep judged docs + a sample up to N"
    )
    parser.add_argument(
        "--max-train", type=int, default=1500, help="mediqa: at most this many training queries"
    )
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rank-weight", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--finetune-epochs", type=float, default=0, help="first fine-tune the model on each set's fit pairs"
    )
    parser.add_argument("--merge", nargs="+", type=Path, help="only print one table from these result files")
    args = parser.parse_args()
    if args.merge:
        print(table([run for path in args.merge for run in json.loads(path.read_text())["runs"]]))
        return
    runs = []
    for name in args.sets:
        runs.append(run_set(name, args.shared, args))
        print(table(runs[-1:]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"small_dims{('_' + args.tag) if args.tag else ''}"
    meta = {"model": args.model, "uptime": os.popen("uptime").read().strip(), "args": vars(args) | {}}
    meta["args"] = {k: str(v) for k, v in meta["args"].items()}
    (args.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1) + "\n")
    (args.out / f"{stem}.md").write_text(f"model: {args.model}\n\n{table(runs)}\n")
    print(table(runs))


if __name__ == "__main__":
    main()
