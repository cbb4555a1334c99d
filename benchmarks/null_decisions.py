"""The null case for the rotation's learned steps (issue 30): with shuffled training labels, how often does the
chain keep a learned step (the refinement over PCA, the adaptor on top)? The target: none in >= 19 of 20 seeds.

    OMP_NUM_THREADS=2 nice -n 19 python benchmarks/null_decisions.py --set legal --seeds 20

Each seed pairs every fit anchor with another anchor's positive (a random permutation: the labels carry no
information), keeps the dev queries' true labels (the decision is judged as training judges it) and runs
training.matryoshka.rotation.decide_rotation with the defaults (refinement, adaptor, the packaged general texts). The
label-free PCA ordering may be applied (it is the default and needs no labels); only the learned steps count as
false takes. Embeddings come from --model (default: the base model) and are cached in --work
(benchmarks/small_dims.encoder), so the seeds cost only the decision. Writes null_decisions_<set>_<tag>.json.
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

from benchmarks.forgetting import general_texts, split  # noqa: E402
from benchmarks.small_dims import DIMS, REPO, encoder, load_set  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="legal")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--work", type=Path, default=REPO / "artifacts" / "forgetting")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--tag", default="20261207")
    parser.add_argument("--scifact-corpus", type=int, default=None)
    parser.add_argument("--max-train", type=int, default=1500)
    parser.add_argument("--adaptor", default="auto", choices=["auto", "off"], help="off: the refinement only")
    parser.add_argument(
        "--judge",
        default="crossfit",
        choices=["crossfit", "dev"],
        help="where the learned steps are judged: cross-fitted training queries (the default) or the dev queries",
    )
    args = parser.parse_args()
    if args.judge == "dev":  # no set cross-fits: the rule before issue 30's cross-fitting
        import training.matryoshka.crossfit as crossfit

        crossfit.MIN_QUERIES = 10**9
    from training.matryoshka.rotation import RotationData, decide_rotation

    corpus, queries, train, _ = load_set(args.set, args.shared, args)
    fit_ids, dev_ids = split(train, queries, 0)
    pairs = [(queries[q], corpus[d]) for q in fit_ids for d in sorted(train[q])]
    docs = [corpus[d] for d in sorted(corpus)]
    dev = [queries[q] for q in dev_ids]
    encode, full = encoder(args.model, args.work)
    vectors = {("document", t): v for t, v in zip(docs, encode(docs, "document"), strict=True)}
    asked = list(dict.fromkeys([a for a, _ in pairs] + dev + general_texts()))
    vectors |= {("query", t): v for t, v in zip(asked, encode(asked, "query"), strict=True)}

    def cached(texts, role):
        return np.stack([vectors[(role, t)] for t in texts]) if texts else np.zeros((0, full), np.float32)

    runs = []
    for seed in range(-1, args.seeds):  # seed -1: the true labels, for reference
        if seed < 0:
            shuffled = pairs
        else:
            order = np.random.default_rng(seed).permutation(len(pairs))
            shuffled = [(a, pairs[j][1]) for (a, _), j in zip(pairs, order, strict=True)]
        labelled = {a: {p} for a, p in shuffled} | {
            queries[q]: {corpus[d] for d in train[q]} for q in dev_ids
        }
        data = RotationData(docs, shuffled, labelled, dev, general_texts=general_texts())
        started = time.perf_counter()
        _, decision = decide_rotation(cached, full, data, list(DIMS), seed=max(seed, 0), adaptor=args.adaptor)
        runs.append(
            {
                "seed": seed,
                "labels": "true" if seed < 0 else "shuffled",
                "applied": decision.applied,
                "learned_steps": list(decision.learned_steps),
                "reason": decision.reason,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        print(f"seed {seed:>2} ({runs[-1]['labels']}): steps {runs[-1]['learned_steps']}", flush=True)
    null = [r for r in runs if r["labels"] == "shuffled"]
    clean = sum(not r["learned_steps"] for r in null)
    summary = {
        "set": args.set,
        "model": args.model,
        "adaptor": args.adaptor,
        "judge": args.judge,
        "fit_pairs": len(pairs),
        "dev_queries": len(dev),
        "seeds_without_a_learned_step": f"{clean} of {len(null)}",
        "target_met": clean >= len(null) - len(null) // 20,
        "uptime": os.popen("uptime").read().strip(),
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"null_decisions_{args.set}_{args.judge}_{args.tag}.json"
    path.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{clean} of {len(null)} shuffled-label seeds took no learned step -> {path}")


if __name__ == "__main__":
    main()
