"""Hyperparameter sweep used to choose embedgate's training defaults (issue 7), on one or more BEIR folders.

    python benchmarks/sweep_defaults.py --model MODEL_DIR --data scifact=../shared/datasets/scifact \
        --data medical=artifacts/datasets/medical-qp --out artifacts/sweep.jsonl [--configs plain,tuned,...]

Self-contained on purpose (sentence-transformers + numpy + bm25s only, no embedgate imports), so it also runs on a
borrowed GPU machine whose library versions differ; the chosen defaults are then re-measured on CPU with the real
pipeline (`benchmarks/quality.py`). For every config: fine-tune from the base model on the train qrels, then NDCG@10
on the test qrels at 384/256/128/64, each with plain truncation and with a post-hoc PCA rotation (an orthogonal
rotation fitted on train-side embeddings: full-dim cosine is unchanged, truncation keeps the high-variance axes).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

DIMS = (384, 256, 128, 64)  # MiniLM; a smaller test model uses its own dim and halvings (dims_for)

# Each config is a delta from BASE. "plain" and "tuned" are the reference recipes of the issue.
BASE = dict(
    epochs=3,
    lr=5e-5,
    batch=32,
    warmup=0.1,
    negatives="none",
    num_negatives=1,
    range_min=0,
    range_max=50,
    margin=0.05,
    matryoshka=True,
    weights=(1, 1, 1, 1),
    symmetric=False,
    pca_head=False,
    scale=20.0,
)
CONFIGS = {
    "plain": dict(epochs=1, lr=2e-5, matryoshka=False),
    "tuned": dict(),
    "hn": dict(negatives="model"),
    "hn_rmin3": dict(negatives="model", range_min=3),
    "hn_bm25": dict(negatives="bm25"),
    "curriculum": dict(negatives="curriculum"),
    "hn_lr1e-4": dict(negatives="model", lr=1e-4),
    "hn_5ep": dict(negatives="model", epochs=5),
    "hn_b64": dict(negatives="model", batch=64),
    "hn_sym": dict(negatives="model", symmetric=True),
    "hn_pca_head": dict(negatives="model", pca_head=True),
    "hn_w_small": dict(negatives="model", weights=(1, 1, 1, 2)),
    "hn_3neg": dict(negatives="model", num_negatives=3),
    "hn_lr1e-4_5ep": dict(negatives="model", lr=1e-4, epochs=5),
    "hn_10ep": dict(negatives="model", epochs=10),
    "hn_pca_head_5ep": dict(negatives="model", pca_head=True, epochs=5),
    "curriculum_5ep": dict(negatives="curriculum", epochs=5),
    # The seed guide's two other strategies (training/mining does the same): BM25 queried with the *positive*
    # (shares its key terms, not its meaning), and the nearest texts of a related domain (--domain-texts).
    "hn_partial": dict(negatives="partial_match"),
    "hn_domain": dict(negatives="domain_confusion"),
    # Small-dim protection at the default's length (64d retention target: >= 95% of 384d).
    "hn_10ep_w_small": dict(negatives="model", epochs=10, weights=(1, 1, 1, 2)),
    "hn_10ep_w_small4": dict(negatives="model", epochs=10, weights=(1, 1, 2, 4)),
}


def dims_for(full: int) -> tuple[int, ...]:
    return DIMS if full == 384 else (full, full // 2, full // 4)


def load_beir(root: Path):
    def jsonl(name):
        return [json.loads(line) for line in open(root / name, encoding="utf-8") if line.strip()]

    corpus = {
        str(d["_id"]): (f"{d.get('title') or ''}. {d['text']}".strip(". ") if d.get("title") else d["text"])
        for d in jsonl("corpus.jsonl")
    }
    queries = {str(q["_id"]): q["text"] for q in jsonl("queries.jsonl")}
    qrels = {}
    for split in ("train", "test"):
        rel = {}
        for i, line in enumerate(open(root / "qrels" / f"{split}.tsv", encoding="utf-8")):
            parts = line.rstrip("\n").split("\t")
            if i == 0 and not parts[-1].replace(".", "").isdigit():
                continue
            if int(float(parts[2])) > 0:
                rel.setdefault(parts[0], set()).add(parts[1])
        qrels[split] = {q: d for q, d in rel.items() if q in queries}
    return corpus, queries, qrels


def unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def ndcg10(q, d, doc_ids, qids, rel):
    scores = q @ d.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    disc = 1 / np.log2(np.arange(2, 12))
    total = 0.0
    for row, qid in zip(top, qids, strict=True):
        gains = np.array([1.0 if doc_ids[j] in rel[qid] else 0.0 for j in row])
        ideal = disc[: min(10, len(rel[qid]))].sum()
        total += float(gains @ disc) / ideal
    return total / len(qids)


def evaluate(model, corpus, queries, qrels, rotation_texts, batch=128):
    doc_ids = sorted(corpus)
    qids = sorted(qrels["test"])
    d = model.encode([corpus[i] for i in doc_ids], batch_size=batch, normalize_embeddings=True)
    q = model.encode([queries[i] for i in qids], batch_size=batch, normalize_embeddings=True)
    fit = np.vstack([d, model.encode(rotation_texts, batch_size=batch, normalize_embeddings=True)])
    _, _, vt = np.linalg.svd(fit, full_matrices=False)
    out = {}
    for dim in dims_for(d.shape[1]):
        out[f"d{dim}"] = round(ndcg10(unit(q[:, :dim]), unit(d[:, :dim]), doc_ids, qids, qrels["test"]), 4)
        qr, dr = q @ vt.T, d @ vt.T
        out[f"pca_d{dim}"] = round(
            ndcg10(unit(qr[:, :dim]), unit(dr[:, :dim]), doc_ids, qids, qrels["test"]), 4
        )
    return out, vt


def training_rows(cfg, corpus, queries, qrels, base_emb, rng, domain=None):
    """(anchor, positive[, negatives]) rows and curriculum stages. `domain`: (texts, embeddings) of a related
    domain, for domain_confusion."""
    doc_ids = sorted(corpus)
    index = {d: i for i, d in enumerate(doc_ids)}
    pairs = [(q, d) for q in sorted(qrels["train"]) for d in sorted(qrels["train"][q])]
    rows = {"anchor": [queries[q] for q, _ in pairs], "positive": [corpus[d] for _, d in pairs]}
    kind = cfg["negatives"]
    if kind == "none":
        return rows, None
    d_emb, q_emb = base_emb
    order = list(range(len(pairs)))
    stages = None
    if kind == "curriculum":
        rng.shuffle(order)
        thirds = np.array_split(np.array(order), 3)
        plan = [("random", thirds[0]), ("bm25", thirds[1]), ("model", thirds[2])]
        stages = []
    else:
        plan = [(kind, np.array(order))]
    bm25 = None
    negs = [None] * len(pairs)
    new_order = []
    for stage, idx in plan:
        if stage in ("bm25", "partial_match") and bm25 is None:
            import bm25s

            bm25 = bm25s.BM25()
            bm25.index(
                bm25s.tokenize([corpus[d] for d in doc_ids], stopwords="en", show_progress=False),
                show_progress=False,
            )
        start = len(new_order)
        for i in idx:
            qid, pos = pairs[i]
            qv = q_emb[qid]
            if (
                stage == "domain_confusion"
            ):  # another domain's texts cannot be unlabelled positives: no filter
                top = np.argsort(-(domain[1] @ qv))[
                    cfg["range_min"] : cfg["range_min"] + cfg["num_negatives"]
                ]
                negs[i] = [domain[0][j] for j in top]
                new_order.append(i)
                continue
            forbidden = {index[d] for d in qrels["train"][qid]}
            scores = d_emb @ qv
            limit = scores[index[pos]] * (1 - cfg["margin"])
            if stage == "random":
                cand = rng.sample(range(len(doc_ids)), min(200, len(doc_ids)))
            elif stage in (
                "bm25",
                "partial_match",
            ):  # partial match queries BM25 with the positive, not the query
                text = corpus[pos] if stage == "partial_match" else queries[qid]
                cand = bm25.retrieve(
                    bm25s.tokenize([text], stopwords="en", return_ids=False, show_progress=False),
                    k=cfg["range_max"],
                    show_progress=False,
                )[0][0].tolist()
            else:
                cand = np.argsort(-scores)[: cfg["range_max"]].tolist()
            cand = cand[cfg["range_min"] :] if stage != "random" else cand
            chosen = [c for c in cand if c not in forbidden and scores[c] <= limit][: cfg["num_negatives"]]
            while len(chosen) < cfg["num_negatives"]:
                c = rng.randrange(len(doc_ids))
                if c not in forbidden and c not in chosen:
                    chosen.append(c)
            negs[i] = [corpus[doc_ids[c]] for c in chosen]
            new_order.append(i)
        if stages is not None:
            stages.append((start, len(new_order)))
    rows = {
        "anchor": [rows["anchor"][i] for i in new_order],
        "positive": [rows["positive"][i] for i in new_order],
    }
    for k in range(cfg["num_negatives"]):
        rows[f"negative_{k + 1}"] = [negs[i][k] for i in new_order]
    return rows, stages


def make_sampler(stages):
    try:  # sentence-transformers >= 5.x layout, then the 3.x/4.x one
        from sentence_transformers.base.sampler import DefaultBatchSampler, NoDuplicatesBatchSampler
    except ImportError:
        from sentence_transformers.sampler import DefaultBatchSampler, NoDuplicatesBatchSampler

    class Curriculum(DefaultBatchSampler):
        def __init__(self, dataset, batch_size, drop_last, valid_label_columns=None, generator=None, seed=0):
            super().__init__(
                dataset,
                batch_size=batch_size,
                drop_last=drop_last,
                valid_label_columns=valid_label_columns,
                generator=generator,
                seed=seed,
            )
            self.parts = [
                (
                    a,
                    NoDuplicatesBatchSampler(
                        dataset.select(range(a, b)),
                        batch_size=batch_size,
                        drop_last=drop_last,
                        generator=generator,
                        seed=seed,
                    ),
                )
                for a, b in stages
            ]

        def set_epoch(self, epoch):
            super().set_epoch(epoch)
            for _, s in self.parts:
                s.set_epoch(epoch)

        def __iter__(self):
            for a, s in self.parts:
                for batch in s:
                    yield [a + i for i in batch]

        def __len__(self):
            return sum(len(s) for _, s in self.parts)

    return Curriculum


def run_config(name, cfg, model_dir, data, base_emb, rotation_texts, device, seed=42, domain=None):
    import datasets
    import torch
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        losses,
    )

    try:
        from sentence_transformers.training_args import BatchSamplers
    except ImportError:
        from sentence_transformers.base.sampler import BatchSamplers
    corpus, queries, qrels = data
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model = SentenceTransformer(model_dir, device=device).float()  # transformers 5 keeps a checkpoint's dtype
    if cfg["pca_head"]:
        from sentence_transformers import models

        _, _, vt = np.linalg.svd(
            np.vstack([base_emb[0], np.stack(list(base_emb[1].values()))]), full_matrices=False
        )
        full = base_emb[0].shape[1]
        dense = models.Dense(full, full, bias=False, activation_function=torch.nn.Identity())
        dense.linear.weight.data = torch.tensor(vt, dtype=torch.float32)
        mods = list(model._modules.values())
        model = SentenceTransformer(modules=[mods[0], mods[1], dense, *mods[2:]], device=device)
    rows, stages = training_rows(cfg, corpus, queries, qrels, base_emb, rng, domain)
    train = datasets.Dataset.from_dict(rows)
    kwargs = {"directions": ("query_to_doc", "doc_to_query")} if cfg["symmetric"] else {}
    inner = losses.MultipleNegativesRankingLoss(model, scale=cfg["scale"], **kwargs)
    dims = dims_for(base_emb[0].shape[1])
    loss = (
        losses.MatryoshkaLoss(model, inner, list(dims), matryoshka_weights=list(cfg["weights"])[: len(dims)])
        if cfg["matryoshka"]
        else inner
    )
    args = SentenceTransformerTrainingArguments(
        output_dir=f"/tmp/sweep/{name}",
        num_train_epochs=cfg["epochs"],
        per_device_train_batch_size=cfg["batch"],
        learning_rate=cfg["lr"],
        warmup_ratio=cfg["warmup"],
        seed=seed,
        data_seed=seed,
        report_to="none",
        save_strategy="no",
        logging_steps=50,
        disable_tqdm=True,
        batch_sampler=make_sampler(stages) if stages else BatchSamplers.NO_DUPLICATES,
    )
    started = time.perf_counter()
    SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=loss).train()
    seconds = time.perf_counter() - started
    scores, _ = evaluate(model, corpus, queries, qrels, rotation_texts)
    return scores | {"train_s": round(seconds, 1), "rows": len(train), "seed": seed}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", action="append", required=True, help="name=BEIR_DIR")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--out", type=Path, default=Path("sweep.jsonl"))
    parser.add_argument("--budget-minutes", type=float, default=1e9)
    parser.add_argument(
        "--seeds", default="42", help="comma-separated training seeds; each config runs once per seed"
    )
    parser.add_argument(
        "--domain-texts",
        type=Path,
        default=None,
        help="one text per line from a related domain (for hn_domain)",
    )
    args = parser.parse_args(argv)
    import sentence_transformers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "st": sentence_transformers.__version__,
                "transformers": transformers.__version__,
                "device": device,
            }
        ),
        flush=True,
    )
    deadline = time.time() + args.budget_minutes * 60
    configs = args.configs.split(",")
    # Read once, and only when a config mines from it (encoded below with each dataset's base model).
    domain_texts = None
    if args.domain_texts and any(CONFIGS[c].get("negatives") == "domain_confusion" for c in configs):
        domain_texts = [
            t for t in dict.fromkeys(args.domain_texts.read_text(encoding="utf-8").splitlines()) if t.strip()
        ]
    for spec in args.data:
        name, path = spec.split("=", 1)
        data = load_beir(Path(path))
        corpus, queries, qrels = data
        base = SentenceTransformer(args.model, device=device).float()
        doc_ids = sorted(corpus)
        d_emb = base.encode([corpus[i] for i in doc_ids], batch_size=128, normalize_embeddings=True)
        train_q = sorted(qrels["train"])
        q_emb = dict(
            zip(
                train_q,
                base.encode([queries[q] for q in train_q], batch_size=128, normalize_embeddings=True),
                strict=True,
            )
        )
        rotation_texts = [queries[q] for q in train_q]
        domain = (
            (domain_texts, base.encode(domain_texts, batch_size=128, normalize_embeddings=True))
            if domain_texts
            else None
        )
        scores, _ = evaluate(base, corpus, queries, qrels, rotation_texts)
        record = {"data": name, "config": "base", **scores}
        print(json.dumps(record), flush=True)
        with open(args.out, "a") as out:
            out.write(json.dumps(record) + "\n")
        for cname, seed in [(c, int(s)) for c in configs for s in args.seeds.split(",")]:
            if time.time() > deadline:
                print(json.dumps({"stopped": "budget", "before": cname}), flush=True)
                return
            cfg = BASE | CONFIGS[cname]
            if cfg["negatives"] == "domain_confusion" and domain is None:
                continue  # needs --domain-texts
            try:
                result = run_config(
                    cname, cfg, args.model, data, (d_emb, q_emb), rotation_texts, device, seed, domain
                )
            except Exception as err:  # one broken config must not cost the rest of a borrowed GPU's time
                result = {"error": f"{type(err).__name__}: {err}"[:500]}
            record = {"data": name, "config": cname, **result}
            print(json.dumps(record), flush=True)
            with open(args.out, "a") as out:
                out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    sys.exit(main())
