"""Does a model fine-tuned on one domain forget another, at each Matryoshka dim, and is the rotation the cause?
(issue 30, the forgetting part).

    OMP_NUM_THREADS=2 nice -n 19 python benchmarks/forgetting.py --train legal medical --other legal medical \
        --shared ../shared/datasets --work artifacts/forgetting --epochs legal=4 medical=1

For each training set A: fine-tune the base model on A's fit pairs (benchmarks/small_dims.py's recipe: MatryoshkaLoss
over MNRL, batch 32, lr 5e-5; no mining), split A's training queries into fit / dev exactly as small_dims.py does,
then decide the post-hoc transform with training.matryoshka.rotation.decide_rotation under each rule compared:
- `none`: the fine-tuned model as trained (the dims' original order);
- `today`: the default chain before this change (PCA fitted on A's texts, refinement, adaptor; no general texts);
- `today_on` / `general_on`: those chains applied whatever the dev queries say (mode "on": the cause, when the
  decision vetoed it);
- `general`: the same chain given the packaged general-domain texts (training.data.GENERAL_STS): the first half
  joins the PCA's sample, weighted to the domain's energy (training/matryoshka/rotation.py, `general_texts`).
and scores, at 384/256/128/64: A's own test queries (in-domain) and every other set B's queries (train + test: B
was never trained on) against B's whole corpus, next to the base model. Each row has the paired 95% bootstrap
interval of the gain over the base model (other domain) or over `today` (in-domain). Encodings are cached in
--work (small_dims.encoder), so a rerun encodes nothing. Writes forgetting_<date>.json / .md under --out.
Development only: needs the shared datasets for every set but legal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.small_dims import (  # noqa: E402  (the shared helpers: one loader, encoder, fine-tune, metric)
    DIMS,
    REPO,
    bootstrap_low_high,
    encoder,
    finetune,
    load_set,
    ndcg_at_10,
)


def split(train: dict, queries: dict, seed: int) -> tuple[list[str], list[str]]:
    """(fit ids, dev ids): small_dims.run_set's split (training.finetune.prepare.dev_size of the training queries)."""
    from training.finetune.prepare import dev_size

    train_ids = sorted(q for q in train if q in queries)
    rng = np.random.default_rng(seed)
    dev_ids = set(rng.choice(train_ids, dev_size(len(train_ids), 0.1), replace=False).tolist())
    return [q for q in train_ids if q not in dev_ids], sorted(dev_ids)


def general_texts() -> list[str]:
    from training.data import GENERAL_STS

    rows = [json.loads(line) for line in GENERAL_STS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return list(dict.fromkeys(t for r in rows for t in (r["sentence1"], r["sentence2"])))


def sts_spearman(encode, matrix: np.ndarray) -> dict[str, float]:
    """Spearman of cosine with the gold score on the packaged general STS set, at each dim."""
    from scipy.stats import spearmanr

    from training.data import GENERAL_STS

    rows = [json.loads(line) for line in GENERAL_STS.read_text(encoding="utf-8").splitlines() if line.strip()]
    a = encode([r["sentence1"] for r in rows], "query") @ matrix.T
    b = encode([r["sentence2"] for r in rows], "query") @ matrix.T
    out = {}
    for dim in DIMS:
        x, y = a[:, :dim], b[:, :dim]
        cos = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
        out[str(dim)] = round(float(spearmanr(cos, [r["score"] for r in rows]).statistic), 4)
    return out


def per_query(encode, matrix, docs: list[str], qtexts: list[str], rel: list[dict[int, int]]) -> dict:
    d, q = encode(docs, "document") @ matrix.T, encode(qtexts, "query") @ matrix.T
    return {dim: ndcg_at_10(q, d, rel, dim) for dim in DIMS}


def compared(scores: dict, reference: dict, seed: int) -> dict:
    out = {}
    for dim in DIMS:
        diff = scores[dim] - reference[dim]
        low, high = bootstrap_low_high(diff, seed)
        out[str(dim)] = {
            "ndcg@10": round(float(scores[dim].mean()), 4),
            "gain": round(float(diff.mean()), 4),
            "low": round(low, 4),
            "high": round(high, 4),
        }
    return out


def run_train_set(name: str, others: list[str], args, rules: dict[str, dict]) -> dict:
    from training.matryoshka.rotation import RotationData, decide_rotation

    corpus, queries, train, test = load_set(name, args.shared, args)
    fit_ids, dev_ids = split(train, queries, args.seed)
    pairs = [(queries[q], corpus[d]) for q in fit_ids for d in sorted(train[q])]
    epochs = args.epochs.get(name, 1.0)
    started = time.perf_counter()
    model = args.model  # epochs 0: the rotation alone, on the base model
    if epochs:
        model = finetune(args.model, pairs, epochs, args.work / f"ft_{name}_{epochs:g}", seed=args.seed)
    finetune_s = time.perf_counter() - started
    encode, full = encoder(model, args.work)
    base_encode, _ = encoder(args.model, args.work)
    doc_ids = sorted(corpus)
    docs = [corpus[d] for d in doc_ids]
    row = {d: i for i, d in enumerate(doc_ids)}
    labelled = {queries[q]: {corpus[d] for d in train[q]} for q in sorted(set(fit_ids) | set(dev_ids))}
    identity = np.eye(full, dtype=np.float32)
    matrices, reasons, decide_s = {"none": identity}, {}, {}
    for rule, extra in rules.items():
        general = {k: v for k, v in extra.items() if k == "general_texts"}
        data = RotationData(docs, pairs, labelled, [queries[q] for q in dev_ids], **general)
        t = time.perf_counter()
        mode = extra.get("mode", "auto")
        matrix, decision = decide_rotation(
            encode, full, data, list(DIMS), mode=mode, seed=args.seed, adaptor=args.adaptor
        )
        decide_s[rule] = round(time.perf_counter() - t, 1)
        matrices[rule] = matrix if matrix is not None else identity
        reasons[rule] = decision.to_dict()
    test_ids = sorted(q for q in test if q in queries)
    test_rel = [{row[d]: g for d, g in test[q].items()} for q in test_ids]
    own = {
        rule: per_query(encode, m, docs, [queries[q] for q in test_ids], test_rel)
        for rule, m in matrices.items()
    }
    result = {
        "train_set": name,
        "epochs": epochs,
        "fit_pairs": len(pairs),
        "dev_queries": len(dev_ids),
        "finetune_s": round(finetune_s, 1),
        "decide_s": decide_s,
        "decisions": reasons,
        "in_domain": {rule: compared(s, own["today"], args.seed) for rule, s in own.items()},
        "sts_spearman": {"base": sts_spearman(base_encode, identity)}
        | {rule: sts_spearman(encode, m) for rule, m in matrices.items()},
        "other": {},
    }
    for other in others:
        if other == name:
            continue
        o_corpus, o_queries, o_train, o_test = load_set(other, args.shared, args)
        o_ids = sorted(o_corpus)
        o_row = {d: i for i, d in enumerate(o_ids)}
        o_docs = [o_corpus[d] for d in o_ids]
        judged = {**o_train, **o_test}
        q_ids = sorted(q for q in judged if q in o_queries)
        rel = [{o_row[d]: g for d, g in judged[q].items()} for q in q_ids]
        texts = [o_queries[q] for q in q_ids]
        base = per_query(base_encode, identity, o_docs, texts, rel)
        scored = {"base": compared(base, base, args.seed)}
        for rule, m in matrices.items():
            scored[rule] = compared(per_query(encode, m, o_docs, texts, rel), base, args.seed)
        result["other"][other] = {"queries": len(q_ids), "docs": len(o_docs), "systems": scored}
    return result


def table(runs: list[dict]) -> str:
    lines = [
        "| trained on | scored on | system | 384 | 256 | 128 | 64 | gain vs reference at 64 (95% CI) | gain at 128 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        rows = [("in-domain test (ref: today)", run["in_domain"])]
        rows += [(f"{o} (ref: base)", v["systems"]) for o, v in run["other"].items()]
        for where, systems in rows:
            for system, s in systems.items():
                g64, g128 = s["64"], s["128"]
                lines.append(
                    f"| {run['train_set']} | {where} | {system} | "
                    + " | ".join(f"{s[str(d)]['ndcg@10']:.4f}" for d in DIMS)
                    + f" | {g64['gain']:+.4f} [{g64['low']:+.4f}, {g64['high']:+.4f}] | {g128['gain']:+.4f} |"
                )
    lines += ["", "| trained on | general STS Spearman | 384 | 256 | 128 | 64 |", "|---|---|---|---|---|---|"]
    for run in runs:
        for system, s in run["sts_spearman"].items():
            lines.append(
                f"| {run['train_set']} | {system} | " + " | ".join(f"{s[str(d)]:.4f}" for d in DIMS) + " |"
            )
    return "\n".join(lines)


def _epochs(values: list[str]) -> dict[str, float]:
    out = {}
    for value in values:
        name, sep, epochs = value.partition("=")
        if not sep:
            raise SystemExit(f"--epochs takes SET=EPOCHS (e.g. legal=4), got {value!r}")
        out[name] = float(epochs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", nargs="+", default=["legal", "medical"])
    parser.add_argument("--other", nargs="+", default=["legal", "medical"])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--work", type=Path, default=REPO / "artifacts" / "forgetting")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument(
        "--epochs",
        nargs="*",
        default=["legal=4", "medical=1"],
        help="SET=EPOCHS (0: no fine-tune, the base model)",
    )
    parser.add_argument(
        "--rules",
        nargs="+",
        default=["today", "general", "today_on"],
        choices=["today", "general", "today_on", "general_on"],
        help="_on: the chain applied whatever the dev queries say (mode on): the cause, not the decision",
    )
    parser.add_argument("--tag", default="20261207")
    parser.add_argument(
        "--adaptor",
        default="auto",
        choices=["auto", "off"],
        help="off: the chain without its last candidate (faster)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scifact-corpus", type=int, default=None)
    parser.add_argument("--max-train", type=int, default=1500)
    args = parser.parse_args()
    args.epochs = _epochs(args.epochs)
    general = general_texts()
    rules = {
        "today": {},
        "general": {"general_texts": general},
        "today_on": {"mode": "on"},
        "general_on": {"general_texts": general, "mode": "on"},
    }
    rules = {r: rules[r] for r in ["today", *args.rules] if r in rules}  # `today` is the in-domain reference
    runs = []
    for name in args.train:
        runs.append(run_train_set(name, args.other, args, rules))
        print(table(runs[-1:]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"uptime": os.popen("uptime").read().strip(), "args": {k: str(v) for k, v in vars(args).items()}}
    stem = args.out / f"forgetting_{'_'.join(args.train)}_{args.tag}"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1) + "\n")
    stem.with_suffix(".md").write_text(f"{meta['uptime']}\n\n{table(runs)}\n")
    print(table(runs))


if __name__ == "__main__":
    main()
