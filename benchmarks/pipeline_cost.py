"""What the pipeline costs, stage by stage and inside training, against the script it replaces.

    OMP_NUM_THREADS=2 nice -n 19 python benchmarks/pipeline_cost.py                    # the demo (legal_lay)
    python benchmarks/pipeline_cost.py --beir path/to/scifact --script                   # + the tuned script
    python benchmarks/pipeline_cost.py --only script --beir path/to/scifact              # the script alone

Each side runs in a fresh interpreter (so its peak RSS is its own): `run_pipeline` on the demo config (or the
same config with `data.path` set to a BEIR folder, train split for training, test split for the gate), and, with
--script, a tuned sentence-transformers script on the same train split: MatryoshkaLoss over
MultipleNegativesRankingLoss, 3 epochs, batch 32, no duplicates in a batch, the same base model, no dev evaluation.
The script's model is then scored on the test split through the gate's own evaluation code (torch at the full
dim; not counted in its wall).

Prints, per pipeline stage: wall s, CPU s, peak RSS MB (this process and its children); inside the stages: the
pieces that cost (mining, the dev evaluation per epoch, checkpoint saves, the post-training decisions, export
parts, each evaluation encoder), with calls, wall, CPU and peak RSS; then the pipeline vs the script (wall ratio,
peak RSS, test NDCG@10 at the full dim) and the 1-minute load average before and after. On a shared machine the
ratio is what to compare. --json writes every number.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEMO = ROOT / "gates" / "demo.yaml"

# (label, module, attribute): functions timed inside the stages. A class method is "Class.method".
PROBES = [
    ("train: load base model", "training.finetune.train", "load_sentence_transformer"),
    ("train: load + split data", "training.finetune.train", "prepare_training_data"),
    ("train: mining (encode + rank)", "training.mining.for_training", "mine_training_rows"),
    ("train: mined-set data gate", "gates.pipeline.stages", "validate_mined"),
    (
        "train: trainer.train (steps + dev evals + saves)",
        "sentence_transformers",
        "SentenceTransformerTrainer.train",
    ),
    ("train: dev evaluation", "training.finetune.dev_eval", "MatryoshkaRetrievalEvaluator.__call__"),
    ("train: checkpoint saves", "transformers.trainer", "Trainer._save_checkpoint"),
    ("train: checkpoint choice", "training.finetune.checkpoint_choice", "choose_checkpoint"),
    ("train: rotation decision + dev metrics", "training.finetune.train", "_rotate_and_score"),
    ("train: loss plot", "training.finetune.train_log", "plot_loss_curve"),
    ("export: load model", "training.export.export_run", "_load_model"),
    ("export: graph + parity (per dim, precision)", "training.export.export_run", "_check_graph"),
    ("evaluate: baseline resolve/export", "gates.evaluation.evaluate", "resolve_baseline"),
    ("evaluate: encode + score (per encoder)", "gates.evaluation.evaluate", "score_encoder"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beir", type=Path, help="a BEIR folder (e.g. SciFact) instead of the demo set")
    parser.add_argument(
        "--script", action="store_true", help="also run the tuned sentence-transformers script"
    )
    parser.add_argument("--only", choices=("pipeline", "script"), help="run one side only")
    parser.add_argument("--epochs", type=float, default=3, help="the script's epochs (default 3)")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="pipeline override key=value")
    parser.add_argument("--out", type=Path, help="work folder (default: a fresh temporary one)")
    parser.add_argument("--json", type=Path, help="write every number here")
    parser.add_argument("--child", choices=("pipeline", "script"), help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.child:
        result = _pipeline(args) if args.child == "pipeline" else _script(args)
        result["process"] = _process_totals()
        args.result.write_text(json.dumps(result, indent=2))
        return
    if args.beir is not None and not (args.beir / "corpus.jsonl").is_file():
        parser.error(
            f"--beir: expected a BEIR folder with corpus.jsonl, got {args.beir}; e.g. --beir data/scifact"
        )
    sides = [args.only] if args.only else ["pipeline", *(["script"] if args.script else [])]
    out = args.out or Path(tempfile.mkdtemp(prefix="pipeline-cost-"))
    out.mkdir(parents=True, exist_ok=True)
    loads = [round(os.getloadavg()[0], 2)]
    results = {}
    for side in sides:
        path = out / f"{side}.json"
        command = [sys.executable, __file__, "--child", side, "--result", str(path), "--out", str(out / side)]
        command += ["--epochs", str(args.epochs), *(["--beir", str(args.beir)] if args.beir else [])]
        command += [f"--set={s}" for s in args.sets]
        subprocess.run(command, check=True)
        results[side] = json.loads(path.read_text())
        loads.append(round(os.getloadavg()[0], 2))
    results["load_1min"] = loads
    results["data"] = str(args.beir or "training/data/legal_lay (demo)")
    _print(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwritten: {args.json}")


# --- the pipeline side ---------------------------------------------------------------------------------------------


def _pipeline(args) -> dict:
    from gates.commands.train import parse_set
    from gates.pipeline.config import load_pipeline_config
    from gates.pipeline.run import run_pipeline

    overrides = {"output_dir": str(args.out / "runs"), "promotion.registry": str(args.out / "registry")}
    if args.beir:
        overrides["data.path"] = str(args.beir.resolve())
    config = load_pipeline_config(DEMO, {**overrides, **parse_set(args.sets)})
    probes = _install_probes()
    started = time.perf_counter()
    outcome = run_pipeline(config, progress=lambda line: print(line, flush=True))
    wall = time.perf_counter() - started
    return {
        "wall_s": round(wall, 1),
        "status": outcome.status,
        "reason": outcome.reason,
        "stages": [
            {"name": s.name, "wall_s": s.seconds, "cpu_s": s.cpu_seconds, "peak_rss_mb": s.peak_rss_mb}
            for s in outcome.stages
        ],
        "inside": probes,
        "test_ndcg@10": _run_ndcg(outcome.run_dir),
        "train": _train_summary(outcome.run_dir),
    }


def _install_probes() -> dict:
    """Wrap each PROBES function so every call adds its wall, CPU and peak RSS to the returned dict."""
    from gates.pipeline.stage_cost import measure

    totals: dict[str, dict] = {}

    def wrap(label, func):
        @functools.wraps(func)
        def timed(*args, **kwargs):
            with measure() as cost:
                result = func(*args, **kwargs)
            entry = totals.setdefault(label, {"calls": 0, "wall_s": 0.0, "cpu_s": 0.0, "peak_rss_mb": 0.0})
            entry["calls"] += 1
            entry["wall_s"] = round(entry["wall_s"] + cost.wall_s, 2)
            entry["cpu_s"] = round(entry["cpu_s"] + cost.cpu_s, 2)
            entry["peak_rss_mb"] = max(entry["peak_rss_mb"], cost.peak_rss_mb)
            return result

        return timed

    for label, module_name, attribute in PROBES:
        owner = importlib.import_module(module_name)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, name, wrap(label, getattr(owner, name)))
    return totals


def _run_ndcg(run_dir: Path) -> dict:
    """Test NDCG@10 of the candidate and the baseline at every dim (onnx-fp32), as the gate read them."""
    out = {}
    for side in ("candidate", "baseline"):
        path = run_dir / "eval" / f"{side}.json"
        if path.is_file():
            rows = json.loads(path.read_text())["retrieval"]
            out[side] = {
                r["dim"]: round(r["mean"]["ndcg@10"], 4) for r in rows if r["backend"] == "onnx-fp32"
            }
    return out


def _train_summary(run_dir: Path) -> dict:
    path = run_dir / "train" / "summary.json"
    if not path.is_file():
        return {}
    summary = json.loads(path.read_text())
    return {
        k: summary.get(k) for k in ("steps", "train_rows", "train_seconds", "best_metric", "early_stopping")
    }


# --- the script side -----------------------------------------------------------------------------------------------


def _script(args) -> dict:
    """The tuned sentence-transformers script the pipeline is compared with, timed from model load to save."""
    from gates.pipeline.stage_cost import measure

    data = args.beir or ROOT / "training" / "data" / "legal_lay"
    with measure() as cost:
        model_dir = _train_script(data, args.out, args.epochs)
    with measure() as eval_cost:
        ndcg = _score_script(model_dir, data)
    return {
        "wall_s": cost.wall_s,
        "stages": [
            {"name": "script: load + train + save", **cost.to_dict()},
            {"name": "script: test evaluation (not in wall)", **eval_cost.to_dict()},
        ],
        "test_ndcg@10": {"candidate": ndcg},
    }


def _train_script(data: Path, out: Path, epochs: float) -> Path:
    import datasets
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer import losses

    from training.data.loading import load_dataset
    from training.models import load_sentence_transformer

    model = load_sentence_transformer("all-MiniLM-L6-v2")
    view = load_dataset(data, "ir").split("train")
    pairs = [
        (view.queries[q], view.corpus[d])
        for q, docs in view.qrels.items()
        if q in view.queries
        for d, score in docs.items()
        if score > 0 and d in view.corpus
    ]
    rows = datasets.Dataset.from_dict({"anchor": [a for a, _ in pairs], "positive": [p for _, p in pairs]})
    dims = [384, 256, 128, 64]
    loss = losses.MatryoshkaLoss(model, losses.MultipleNegativesRankingLoss(model), dims)
    trainer = SentenceTransformerTrainer(
        model=model,
        args=SentenceTransformerTrainingArguments(
            output_dir=str(out / "checkpoints"),
            num_train_epochs=epochs,
            per_device_train_batch_size=32,
            learning_rate=5e-5,
            warmup_ratio=0.1,
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            save_strategy="no",
            eval_strategy="no",
            logging_steps=50,
            report_to="none",
            seed=42,
            disable_tqdm=True,
            dataloader_pin_memory=False,
        ),
        train_dataset=rows,
        loss=loss,
    )
    trainer.train()
    model_dir = out / "model"
    model.save(str(model_dir), safe_serialization=True)
    return model_dir


def _score_script(model_dir: Path, data: Path) -> dict:
    from gates.evaluation.encoders import torch_encoder
    from gates.evaluation.evaluate import evaluate_model, load_eval_set

    view, _ = load_eval_set(data, "test")
    dims = (384, 256, 128, 64)
    encoder = torch_encoder(model_dir, dims)
    # Scored as a candidate (the label the results accept), through the gate's own retrieval metrics.
    results = evaluate_model("candidate", "script", str(model_dir), (encoder,), view, dims, None, {})
    return {r.dim: round(r.mean["ndcg@10"], 4) for r in results.retrieval}


# --- report --------------------------------------------------------------------------------------------------------


def _process_totals() -> dict:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "peak_rss_mb": round(own.ru_maxrss / 1024, 1),
        # The largest finished child's peak; a forked child counts the parent's pages it inherited.
        "children_peak_rss_mb": round(children.ru_maxrss / 1024, 1),
        "cpu_s": round(own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime, 1),
    }


def _print(results: dict) -> None:
    print(f"\ndata: {results['data']}; 1-min load average before/after each side: {results['load_1min']}")
    for side in ("pipeline", "script"):
        if side not in results:
            continue
        r = results[side]
        print(
            f"\n## {side}: wall {r['wall_s']:.1f} s; process peak RSS {r['process']['peak_rss_mb']:.0f} MB; "
            f"CPU {r['process']['cpu_s']:.0f} s"
        )
        print("| stage | wall s | CPU s | peak RSS MB |\n|---|---:|---:|---:|")
        for s in r["stages"]:
            print(f"| {s['name']} | {s['wall_s']:.1f} | {s['cpu_s']:.1f} | {s['peak_rss_mb']:.0f} |")
        if r.get("inside"):
            print("\n| inside the stages | calls | wall s | CPU s | peak RSS MB |\n|---|---:|---:|---:|---:|")
            for label, _, _ in PROBES:
                e = r["inside"].get(label)
                if e:
                    print(
                        f"| {label} | {e['calls']} | {e['wall_s']:.1f} | {e['cpu_s']:.1f} | {e['peak_rss_mb']:.0f} |"
                    )
        print(f"test ndcg@10 (onnx-fp32 for the pipeline, torch for the script) by dim: {r['test_ndcg@10']}")
        if r.get("train"):
            print(f"training: {r['train']}")
    if "pipeline" in results and "script" in results:
        p, s = results["pipeline"], results["script"]
        print(
            f"\npipeline / script wall: {p['wall_s'] / s['wall_s']:.2f}x "
            f"({p['wall_s']:.0f} s vs {s['wall_s']:.0f} s); peak RSS {p['process']['peak_rss_mb']:.0f} vs "
            f"{s['process']['peak_rss_mb']:.0f} MB"
        )


if __name__ == "__main__":
    main()
