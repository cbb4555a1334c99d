"""Re-decide a finished run's rotation with today's rule and score both on the test split, per dim.

Why: a rotation rule is decided after training, so a change to it can be measured on a trained model in minutes
instead of rerunning a pipeline (96 min on SciFact on 2 cores). It rebuilds the run's dev split exactly as training
did (same data, dev fraction and seed), runs training.matryoshka.rotation.decide_rotation on the run's saved model, and ranks
the test queries against the whole corpus at each Matryoshka dim with and without the re-decided transform
(torch fp32; the pipeline's ONNX fp32 scores agree to ~1e-4).

It also scores on test every candidate the chain tried (PCA, the refinement, the adaptor), which shows what the
dev queries could not. Only for runs whose saved model carries no rotation yet (the run's `rotation.applied` is false): a rotation on top
of a rotation is not what training would do.

    python benchmarks/redecide_rotation.py RUN_DIR [--out benchmarks/results/redecide_NAME.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a run folder with train/summary.json and model/")
    parser.add_argument("--out", type=Path, help="write the result here (JSON)")
    args = parser.parse_args()

    import numpy as np
    from sentence_transformers import SentenceTransformer

    from training.config import load_config
    from training.data.loading import load_dataset
    from training.finetune.dev_eval import MatryoshkaRetrievalEvaluator
    from training.finetune.prepare import prepare_training_data
    from training.finetune.train import _dev_dims, _rotation_data
    from training.matryoshka.rotation import decide_rotation, model_encoder
    from training.prompts import strip_prepared

    summary = json.loads((args.run / "train" / "summary.json").read_text())
    if (summary.get("rotation") or {}).get("applied"):
        parser.error(f"{args.run}: its model already carries a rotation; pick a run where none was applied")
    config = load_config(args.run / "config.yaml")
    data = load_dataset(config.data.path, config.data.type, config.data.columns)
    prepared = prepare_training_data(data, config.data.split, config.dev_fraction, config.seed)
    prepared = strip_prepared(prepared, config.prompts.model_dump() if config.prompts else {})
    model = SentenceTransformer(str(args.run / "model"), device="cpu")
    dims, dim = _dev_dims(config), model.get_embedding_dimension()
    encode = model_encoder(
        model, known={}
    )  # keeps what it encodes: the corpus once for the decision and the test

    # Every candidate the chain tried, scored on test too: what the dev queries could not show.
    import training.matryoshka.adaptor as adaptors
    import training.matryoshka.rotation_learning as learning

    candidates: dict[str, np.ndarray] = {}

    def recorded(name, learn):
        def wrapper(init, *a, **k):
            candidates.setdefault("pca" if name == "refined" else "rotation chosen", init)
            out = learn(init, *a, **k)
            candidates[name] = out.rotation if name == "refined" else out.matrix
            return out

        return wrapper

    learning.learn_rotation = recorded("refined", learning.learn_rotation)
    adaptors.learn_adaptor = recorded("adaptor", adaptors.learn_adaptor)

    started = time.perf_counter()
    matrix, decision = decide_rotation(
        encode, dim, _rotation_data(prepared), dims, config.rotation, config.seed, config.adaptor
    )
    decide_s = time.perf_counter() - started

    test = data.split(config.data.eval_split or "test")
    doc_ids = list(test.corpus)
    position = {d: i for i, d in enumerate(doc_ids)}
    relevant = test.relevant()
    queries = [q for q in relevant if q in test.queries]
    evaluator = MatryoshkaRetrievalEvaluator(
        [test.queries[q] for q in queries],
        [test.corpus[d] for d in doc_ids],
        [{position[d] for d in relevant[q] if d in position} for q in queries],
        dims,
    )
    q, d = encode(evaluator.queries, "query"), encode(evaluator.corpus, "document")
    scores = {"run": evaluator.scores(q, d)}
    if matrix is not None:  # the rotated model's output, normalised again per dim by scores()
        scores["redecided"] = evaluator.scores(q @ matrix.T, d @ matrix.T)
    for name, candidate in candidates.items():
        scores[f"candidate: {name}"] = evaluator.scores(q @ candidate.T, d @ candidate.T)
    result = {
        "run": str(args.run),
        "recorded_reason": summary["rotation"]["reason"],
        "redecided": decision.to_dict(),
        "decide_seconds": round(decide_s, 1),
        "test_queries": len(queries),
        "test_corpus": len(doc_ids),
        "test_ndcg@10": scores,
    }
    for name, by_dim in scores.items():
        row = " ".join(f"{k.split('_d')[-1]}:{v:.4f}" for k, v in by_dim.items() if "_d" in k)
        print(f"{name:26s} {row}")
    print(("applied: " if decision.applied else "not applied: ") + decision.reason)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
