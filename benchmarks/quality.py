"""Quality benchmark (issue 7): base model vs the plain and tuned recipes vs `embedgate pipeline` defaults.

    python benchmarks/quality.py --data scifact=artifacts/datasets/scifact-clean \
        --data medical=artifacts/datasets/medical-qp --out benchmarks/results --work artifacts/quality

(`scifact-clean` is SciFact without the train copies of two test claims, made by benchmarks/drop_leaked_queries.py
because the data gate stops SciFact as shipped; `medical-qp` comes from benchmarks/medical_ir.py.) Each system's
scores are kept in the work folder, so an interrupted run resumes where it stopped. For each dataset:
- base: all-MiniLM-L6-v2 as shipped;
- plain recipe: MNRL, 1 epoch, batch 32, lr 2e-5, warmup 10%, no hard negatives, no Matryoshka;
- tuned recipe: MatryoshkaLoss over MNRL, 3 epochs, lr 5e-5, batch 32, warmup 10%;
- embedgate: `embedgate pipeline` with default settings (data gate, mining, training, export, evaluation, gate).
Every model is exported to ONNX and scored through the service's embedder (fp32 and int8) on the test qrels:
NDCG@10, MRR@10, Recall@10 at 384/256/128/64, with the gain over base and over the plain recipe and wall times.
Writes quality_<name>.json, quality.md (tables) and quality_<name>.png. Development only: needs ../shared.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import markdown_table  # noqa: E402

METRICS = ("ndcg@10", "mrr@10", "recall@10")
RECIPES = {
    "plain": {
        "epochs": 1,
        "learning_rate": 2e-5,
        "batch_size": 32,
        "warmup_ratio": 0.1,
        "matryoshka": False,
        "mining.strategy": "none",
        "rotation": "off",
        "dev_fraction": 0.0,
    },
    "tuned": {
        "epochs": 3,
        "learning_rate": 5e-5,
        "batch_size": 32,
        "warmup_ratio": 0.1,
        "matryoshka": True,
        "mining.strategy": "none",
        "rotation": "off",
        "dev_fraction": 0.0,
    },
}


def evaluate_onnx(onnx_dir: Path, data_dir: Path, label: str, name: str, timings: dict):
    from gates.evaluation.encoders import onnx_encoder
    from gates.evaluation.evaluate import evaluate_model
    from training.data.loading import load_dataset

    view = load_dataset(data_dir, "ir").split("test")
    encoders = tuple(onnx_encoder(onnx_dir, p) for p in ("fp32", "int8"))
    return evaluate_model(label, name, str(onnx_dir), encoders, view, encoders[0].dims, None, timings)


def train_recipe(name: str, data_dir: Path, work: Path) -> tuple[Path, float]:
    from training.config import load_config
    from training.export.export_run import export_run
    from training.finetune.train import train

    started = time.perf_counter()
    config = load_config(
        None,
        {
            "data.path": str(data_dir),
            "data.type": "ir",
            "output_dir": str(work),
            "run_id": name,
            **RECIPES[name],
        },
    )
    result = train(config, progress=False, keep_checkpoints=False)
    export_run(result.run_dir / "model", result.run_dir / "onnx")
    return result.run_dir / "onnx", time.perf_counter() - started


def run_embedgate(data_dir: Path, work: Path) -> tuple[Path, float, dict]:
    from gates.pipeline.config import load_pipeline_config
    from gates.pipeline.run import run_pipeline

    started = time.perf_counter()
    config = load_pipeline_config(
        None,
        {
            "data.path": str(data_dir),
            "data.type": "ir",
            "output_dir": str(work / "runs"),
            "run_id": "embedgate",
            "promotion.registry": str(work / "registry"),
        },
    )
    outcome = run_pipeline(config, progress=lambda line: print(f"    {line}", flush=True))
    seconds = time.perf_counter() - started
    return outcome.run_dir / "onnx", seconds, outcome.to_dict()


def compute_system(system: str, data_dir: Path, work: Path, timings: dict):
    """Train (or not) and score one system -> (EvalResults, wall seconds of training/pipeline, extra)."""
    if system == "base":
        from training.export.export_run import export_run
        from training.models import resolve_model_path

        shutil.rmtree(work / "base-onnx", ignore_errors=True)
        export_run(resolve_model_path("all-MiniLM-L6-v2"), work / "base-onnx")
        return evaluate_onnx(work / "base-onnx", data_dir, "baseline", "base", timings), 0.0, {}
    if system in RECIPES:
        shutil.rmtree(work / system, ignore_errors=True)
        onnx_dir, wall = train_recipe(system, data_dir, work)
        return evaluate_onnx(onnx_dir, data_dir, "candidate", system, timings), wall, {}
    shutil.rmtree(work / "runs", ignore_errors=True)
    shutil.rmtree(work / "registry", ignore_errors=True)
    onnx_dir, wall, outcome = run_embedgate(data_dir, work)
    return evaluate_onnx(onnx_dir, data_dir, "candidate", "embedgate", timings), wall, outcome


def cached(path: Path, compute):
    """(EvalResults, wall seconds, extra) from `path` if an earlier run finished this system, else computed."""
    from gates.evaluation.results import EvalResults

    if path.is_file():
        saved = json.loads(path.read_text())
        return EvalResults.from_dict(saved["results"]), saved["wall"], saved.get("extra", {})
    results, wall, extra = compute()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"results": results.to_dict(), "wall": wall, "extra": extra}, default=str))
    tmp.replace(path)
    return results, wall, extra


def table(results: dict, dims) -> dict:
    """{system: {backend: {dim: {metric: value}}}}"""
    out = {}
    for system, res in results.items():
        for entry in res.retrieval:
            out.setdefault(system, {}).setdefault(entry.backend, {})[entry.dim] = {
                m: entry.mean[m] for m in METRICS
            }
    return out


def markdown(name: str, scores: dict, walls: dict, dims) -> str:
    header = ["system", "backend", *(f"NDCG@10 d{d}" for d in dims), "MRR@10 d384", "Recall@10 d384"]
    rows = []
    for system, backends in scores.items():
        for backend, by_dim in backends.items():
            full = by_dim[max(dims)]
            rows.append(
                [system, backend, *(f"{by_dim[d]['ndcg@10']:.4f}" for d in dims), f"{full['mrr@10']:.4f}"]
                + [f"{full['recall@10']:.4f}", f"{by_dim[min(dims)]['ndcg@10'] / full['ndcg@10']:.1%}"]
                + [f"{walls.get(system, 0):.0f}s"]
            )
    lines = [f"### {name}", "", markdown_table([*header, "d64 / d384", "wall"], rows, left=2)]
    base = scores["base"]["onnx-fp32"]
    plain = scores["plain"]["onnx-fp32"]
    ours = scores["embedgate"]["onnx-fp32"]
    lines += [
        "",
        "embedgate (onnx-fp32) NDCG@10 gain: "
        + ", ".join(
            f"d{d} {ours[d]['ndcg@10'] - base[d]['ndcg@10']:+.4f} vs base / "
            f"{ours[d]['ndcg@10'] - plain[d]['ndcg@10']:+.4f} vs plain"
            for d in dims
        ),
    ]
    int8 = scores["embedgate"]["onnx-int8"]
    lines.append(
        "embedgate int8 / fp32 NDCG@10: "
        + ", ".join(f"d{d} {int8[d]['ndcg@10'] / ours[d]['ndcg@10']:.1%}" for d in dims)
    )
    return "\n".join(lines) + "\n"


def plot(name: str, scores: dict, dims, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for system, color in zip(
        ("base", "plain", "tuned", "embedgate"),
        ("tab:gray", "tab:orange", "tab:green", "tab:blue"),
        strict=True,
    ):
        for backend, style in (("onnx-fp32", "-"), ("onnx-int8", "--")):
            ys = [scores[system][backend][d]["ndcg@10"] for d in sorted(dims)]
            ax.plot(sorted(dims), ys, style, marker="o", color=color, label=f"{system} {backend}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(dims), [str(d) for d in sorted(dims)])
    ax.set_xlabel("embedding dimension")
    ax.set_ylabel("NDCG@10 (test)")
    ax.set_title(f"{name}: NDCG@10 vs dimension")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True, help="name=BEIR_DIR (train + test qrels)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work_root = args.work or Path(tempfile.mkdtemp(prefix="embedgate-quality-"))
    # Promotion also saves to BentoML's model store: keep the benchmark's versions out of the user's ~/bentoml.
    os.environ.setdefault("BENTOML_HOME", str(work_root / "bentoml"))
    report = [f"Machine load at start: {os.getloadavg()}", ""]
    for spec in args.data:
        name, data_dir = spec.split("=", 1)
        data_dir = Path(data_dir).resolve()
        work = work_root / name
        work.mkdir(parents=True, exist_ok=True)
        timings: dict = {}
        walls: dict = {}
        results = {}
        started = time.perf_counter()

        outcome = {}
        for system in ("base", "plain", "tuned", "embedgate"):
            print(f"[{name}] {system}", flush=True)
            results[system], walls[system], extra = cached(
                work / f"{system}.json", functools.partial(compute_system, system, data_dir, work, timings)
            )
            outcome = extra or outcome
        dims = sorted(results["base"].dims("onnx-fp32"), reverse=True)
        scores = table(results, dims)
        payload = {
            "data": str(data_dir),
            "scores": scores,
            "wall_seconds": walls,
            "pipeline": outcome,
            "encode_timings": timings,
            "load_end": os.getloadavg(),
            "total_seconds": round(time.perf_counter() - started, 1),
        }
        (args.out / f"quality_{name}.json").write_text(json.dumps(payload, indent=2, default=str))
        plot(name, scores, dims, args.out / f"quality_{name}.png")
        report.append(markdown(name, scores, walls, dims))
        report.append(f"pipeline: {outcome['status']} ({outcome['reason']})\n")
        print(report[-2], flush=True)
        (args.out / "quality.md").write_text("\n".join(report) + "\n")  # after each dataset: nothing lost
    report.append(f"Machine load at end: {os.getloadavg()}")
    (args.out / "quality.md").write_text("\n".join(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
