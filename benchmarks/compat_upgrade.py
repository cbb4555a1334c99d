"""Upgrades without re-embedding (issue 25): how much of a new model's gain reaches clients who keep the vectors
they stored with an older version, through a backward map into the old space (training/compat.py).

    OMP_NUM_THREADS=2 nice -n 19 python benchmarks/compat_upgrade.py --sets legal medical scifact \
        --shared ../shared/datasets --work artifacts/compat --out benchmarks/results

A chain of three versions per set, each trained on the training queries only (never the test split):
  v1 = the base model (all-MiniLM-L6-v2) as served;  v2 = fine-tuned on half the training pairs (--v2-fraction);
  v3 = fine-tuned on all of them (more data). The same short recipe as benchmarks/small_dims.py.
For each upgrade (v1 -> v2, v1 -> v3, v2 -> v3) and each of the old version's dims (384/256/128/64), test NDCG@10
of every test query against the whole corpus, for:
  old-old     the old model's queries against its own stored document vectors (what the client has today)
  compat-ls   new queries mapped by the least-squares map into the old space, against the old document vectors
  compat      the shipped map: least-squares start + ranking against the frozen old vectors (training/compat.py)
  new-new     the new model against its own re-embedded documents (what a full re-embedding gives); the map does
              not change the new model, so its price on new-new is zero by construction
  composed    (v1 -> v3 only) v3 mapped into v2's space, then by v2's map into v1's: chaining vs training directly
The 95% paired bootstrap interval of compat - old-old is printed per dim, and the share of the new-new gain that
compat recovers. Writes compat_upgrade.json and compat_upgrade.md under --out.
Development only: needs ../shared for all sets but legal (a user's clone has the legal set).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.small_dims import DIMS, bootstrap_low_high, encoder, finetune, load_set, ndcg_at_10  # noqa: E402


def _fit(train_new, doc_new, doc_old, positives, ranking: bool, train_old=None, negatives="batch"):
    from training.compat import fit_backward_map

    return fit_backward_map(
        train_new, doc_new, doc_old, positives, list(DIMS), old_queries=train_old, ranking=ranking,
        negatives=negatives,
    )  # fmt: skip


def _mapped(vectors: np.ndarray, weight: np.ndarray) -> np.ndarray:
    out = vectors @ weight
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def run_set(name: str, shared: Path, args) -> dict:
    corpus, queries, train, test = load_set(name, shared, args)
    doc_ids = sorted(corpus)
    row = {d: i for i, d in enumerate(doc_ids)}
    docs = [corpus[d] for d in doc_ids]
    train_ids = sorted(q for q in train if q in queries)
    test_ids = sorted(q for q in test if q in queries)
    rng = np.random.default_rng(args.seed)
    half = set(rng.choice(train_ids, int(len(train_ids) * args.v2_fraction), replace=False).tolist())
    pairs_all = [(queries[q], corpus[d]) for q in train_ids for d in sorted(train[q])]
    pairs_half = [(queries[q], corpus[d]) for q in train_ids if q in half for d in sorted(train[q])]
    print(f"{name}: {len(docs)} docs, {len(train_ids)} train / {len(test_ids)} test queries", flush=True)
    started = time.perf_counter()
    models = {
        "v1": args.model,
        "v2": finetune(
            args.model, pairs_half, args.epochs, args.work / f"compat_{name}_{_share(args.v2_fraction)}"
        ),
        "v3": finetune(args.model, pairs_all, args.epochs, args.work / f"compat_{name}_all"),
    }
    emb = {}
    for version, ref in models.items():
        encode, _ = encoder(ref, args.work)
        emb[version] = {
            "docs": encode(docs, "document"),
            "train": encode([queries[q] for q in train_ids], "query"),
            "test": encode([queries[q] for q in test_ids], "query"),
        }
    train_pos = [{row[d] for d in train[q] if d in row} for q in train_ids]
    # Test queries none of whose relevant documents is relevant to a training query: a map trained against the
    # whole stored corpus also learns which documents are answers, and BEIR sets share answers between splits
    # (65% of SciFact's test queries, 75% of the legal set's), so the gain is also reported on the rest alone.
    train_docs = {d for q in train_ids for d in train[q]}
    unseen = np.array([not any(d in train_docs for d in test[q]) for q in test_ids])
    test_rel = [{row[d]: s for d, s in test[q].items() if d in row} for q in test_ids]

    def ndcg(q, d, dim):
        return ndcg_at_10(q, d, test_rel, dim)

    maps, batch_maps = {}, {}
    result = {
        "docs": len(docs),
        "train_queries": len(train_ids),
        "test_queries": len(test_ids),
        "upgrades": {},
        "unseen_positive_queries": int(unseen.sum()),
    }
    # A version's map is fitted on the training pairs its own run had (v2: its share, v3: all), as the pipeline
    # does: a map fitted on queries the new model never trained on also carries labels the model did not see
    seen = {"v2": np.array([q in half for q in train_ids]), "v3": np.ones(len(train_ids), dtype=bool)}
    for old, new in (("v1", "v2"), ("v1", "v3"), ("v2", "v3")):
        e_old, e_new, rows = emb[old], emb[new], seen[new]
        pos = [p for p, keep in zip(train_pos, rows, strict=True) if keep]
        fit_args = (e_new["train"][rows], e_new["docs"], e_old["docs"], pos)
        fits = {
            "compat-ls": _fit(*fit_args, False, e_old["train"][rows]),
            "compat": _fit(*fit_args, True, e_old["train"][rows], "corpus"),
            "compat-batch": _fit(*fit_args, True, e_old["train"][rows]),
        }
        maps[(old, new)] = fits["compat"].weight
        batch_maps[(old, new)] = fits["compat-batch"].weight
        systems = {"old-old": (e_old["test"], e_old["docs"])}
        for label, fit in fits.items():
            systems[label] = (_mapped(e_new["test"], fit.weight), e_old["docs"])
        if (old, new) == ("v1", "v3"):
            composed = _mapped(
                _mapped(e_new["test"], _fit_weight(maps, "v2", "v3", emb, train_pos)), maps[("v1", "v2")]
            )
            systems["composed"] = (composed, e_old["docs"])
        systems["new-new"] = (e_new["test"], e_new["docs"])
        per_dim = {}
        for dim in DIMS:
            scores = {label: ndcg(q, d, dim) for label, (q, d) in systems.items()}
            base = scores["old-old"]
            gain_new = scores["new-new"].mean() - base.mean()
            entry = {label: round(float(s.mean()), 4) for label, s in scores.items()}
            for label in ("compat", "compat-ls", "compat-batch", "composed"):
                if label in scores:
                    low, high = bootstrap_low_high(scores[label] - base, args.seed)
                    entry[f"{label}_ci"] = [round(low, 4), round(high, 4)]
            if unseen.any():  # the same on the queries whose answers no training query had
                entry["unseen"] = {label: round(float(s[unseen].mean()), 4) for label, s in scores.items()}
                for label in ("compat", "compat-batch"):
                    low, high = bootstrap_low_high(scores[label][unseen] - base[unseen], args.seed)
                    entry["unseen"][f"{label}_ci"] = [round(low, 4), round(high, 4)]
            entry["recovered"] = (
                round(float((scores["compat"].mean() - base.mean()) / gain_new), 3) if gain_new > 0 else None
            )
            per_dim[dim] = entry
        result["upgrades"][f"{old}->{new}"] = {
            "per_dim": per_dim,
            "fit": {
                label: {k: v for k, v in fit.to_dict().items() if k != "history"}
                for label, fit in fits.items()
            },
        }
        print(_table(name, f"{old}->{new}", per_dim), flush=True)
        print(_unseen_table(per_dim, int(unseen.sum())), flush=True)
    result["chain"] = _chain(emb, batch_maps, lambda q, d, dim: ndcg(q, d, dim), args.seed)
    print(_chain_table(name, result["chain"]), flush=True)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def _share(fraction: float) -> str:
    return "half" if fraction == 0.5 else f"p{round(fraction * 100)}"


def _chain(emb, batch_maps, ndcg, seed) -> dict:
    """What v1's clients get at each promotion with the shipped default (in-batch maps, each trained directly
    against v1's stored vectors): v1 itself, then v2@v1, then v3@v1, each step's paired interval against the
    previous step's answer (the pipeline offers v3@v1 only when it beats v2@v1, what champion@v1 serves then)."""
    stored = emb["v1"]["docs"]
    steps = {
        "v1": emb["v1"]["test"],
        "v2@v1": _mapped(emb["v2"]["test"], batch_maps[("v1", "v2")]),
        "v3@v1": _mapped(emb["v3"]["test"], batch_maps[("v1", "v3")]),
    }
    # documents a client adds after the upgrade go through the compatible graph too (as `champion@v1` documents):
    # half the corpus stored by v1, the other half added through v2@v1; queried by v2@v1
    added = np.arange(len(stored)) % 2 == 1
    mixed = stored.copy()
    mixed[added] = _mapped(emb["v2"]["docs"][added], batch_maps[("v1", "v2")])
    out = {}
    for dim in DIMS:
        scores = {label: ndcg(q, stored, dim) for label, q in steps.items()}
        scores["v2@v1, half the docs added by it"] = ndcg(steps["v2@v1"], mixed, dim)
        entry = {label: round(float(s.mean()), 4) for label, s in scores.items()}
        for label, previous in (("v2@v1", "v1"), ("v3@v1", "v2@v1")):
            low, high = bootstrap_low_high(scores[label] - scores[previous], seed)
            entry[f"{label} - {previous}"] = [round(float((scores[label] - scores[previous]).mean()), 4),
                                               round(low, 4), round(high, 4)]  # fmt: skip
        out[dim] = entry
    return out


def _chain_table(name: str, chain: dict) -> str:
    lines = [f"\n{name} chain: what v1's clients get over their stored v1 vectors (in-batch maps, the default)",
             "| dim | v1 | v2@v1 | v3@v1 | v2@v1 - v1 (95% CI) | v3@v1 - v2@v1 (95% CI) | v2@v1, half the docs added by it |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for dim, e in chain.items():
        a, b = e["v2@v1 - v1"], e["v3@v1 - v2@v1"]
        lines.append(
            f"| {dim} | {e['v1']:.4f} | {e['v2@v1']:.4f} | {e['v3@v1']:.4f} | {a[0]:+.4f} [{a[1]:+.4f}, {a[2]:+.4f}] "
            f"| {b[0]:+.4f} [{b[1]:+.4f}, {b[2]:+.4f}] | {e['v2@v1, half the docs added by it']:.4f} |"
        )
    return "\n".join(lines)


def _fit_weight(maps, old, new, emb, train_pos):
    if (old, new) not in maps:
        maps[(old, new)] = _fit(
            emb[new]["train"], emb[new]["docs"], emb[old]["docs"], train_pos, True, emb[old]["train"]
        ).weight
    return maps[(old, new)]


def _table(name: str, upgrade: str, per_dim: dict) -> str:
    labels = [
        k for k in next(iter(per_dim.values())) if not k.endswith("_ci") and k not in ("recovered", "unseen")
    ]
    lines = [f"\n{name} {upgrade}", "| dim | " + " | ".join(labels) + " | compat - old-old (95% CI) | recovered |",
             "|---" * (len(labels) + 3) + "|"]  # fmt: skip
    for dim, entry in per_dim.items():
        low, high = entry["compat_ci"]
        cells = " | ".join(f"{entry[label]:.4f}" for label in labels)
        lines.append(
            f"| {dim} | {cells} | {entry['compat'] - entry['old-old']:+.4f} [{low:+.4f}, {high:+.4f}] | {entry['recovered']} |"
        )
    return "\n".join(lines)


def _unseen_table(per_dim: dict, n: int) -> str:
    if not n:
        return ""
    lines = [f"  on the {n} test queries whose answers no training query had:"]
    for dim, entry in per_dim.items():
        u = entry["unseen"]
        lines.append(
            f"  {dim}: old-old {u['old-old']:.4f}  compat {u['compat']:.4f}  new-new {u['new-new']:.4f}  "
            f"compat - old-old {u['compat'] - u['old-old']:+.4f} [{u['compat_ci'][0]:+.4f}, {u['compat_ci'][1]:+.4f}]"
            f"  compat-batch {u['compat-batch']:.4f} [{u['compat-batch_ci'][0]:+.4f}, {u['compat-batch_ci'][1]:+.4f}]"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["legal"])
    parser.add_argument("--shared", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--work", type=Path, default=Path("artifacts/compat"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scifact-corpus", type=int, default=None)
    parser.add_argument("--max-train", type=int, default=2000)
    parser.add_argument(
        "--v2-fraction",
        type=float,
        default=0.5,
        help="share of the training queries v2 is trained on (v3: all)",
    )
    args = parser.parse_args()
    results = {}
    for name in args.sets:
        results[name] = run_set(name, args.shared, args)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "compat_upgrade.json").write_text(json.dumps(results, indent=2))
    tables = [
        _table(n, u, r["per_dim"]) + "\n\n" + _unseen_table(r["per_dim"], res["unseen_positive_queries"])
        for n, res in results.items()
        for u, r in res["upgrades"].items()
    ] + [_chain_table(n, res["chain"]) for n, res in results.items()]
    (args.out / "compat_upgrade.md").write_text("\n".join(tables) + "\n")


if __name__ == "__main__":
    main()
