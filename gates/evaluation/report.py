"""The human side of an evaluation: a Markdown table and a metric-vs-dimension plot, candidate vs baseline."""

from __future__ import annotations

from pathlib import Path

from gates.evaluation.results import EvalResults

TABLE_METRICS = ("ndcg@10", "mrr@10", "recall@10", "map@100")


def summary_table(candidate: EvalResults, baseline: EvalResults, data: Path | str, split: str) -> str:
    lines = [
        f"# Evaluation on {data} ({split} split)",
        "",
        f"candidate: {candidate.model.name}  |  baseline: {baseline.model.name}",
        "",
        "| model | backend | dim | " + " | ".join(TABLE_METRICS) + " |",
        "|---|---|---:|" + "---:|" * len(TABLE_METRICS),
    ]
    for results in (candidate, baseline):
        for entry in sorted(results.retrieval, key=lambda e: (e.backend, -e.dim)):
            values = " | ".join(f"{entry.mean.get(m, float('nan')):.4f}" for m in TABLE_METRICS)
            lines.append(f"| {results.model.label} | {entry.backend} | {entry.dim} | {values} |")
    n = candidate.retrieval[0].n_queries
    lines += ["", f"{n} judged queries; metrics macro-averaged over queries; ties broken by doc id."]
    if candidate.sts:
        lines += ["", "| model | backend | dim | STS spearman |", "|---|---|---:|---:|"]
        for results in (candidate, baseline):
            for s in results.sts:
                lines.append(f"| {results.model.label} | {s.backend} | {s.dim} | {s.spearman:.4f} |")
    return "\n".join(lines) + "\n"


def plot_metric_vs_dim(
    candidate: EvalResults, baseline: EvalResults, out: Path, metric: str = "ndcg@10"
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    styles = {"onnx-fp32": "-", "onnx-int8": "--", "torch": ":"}
    for results, color in ((candidate, "tab:blue"), (baseline, "tab:gray")):
        for backend in sorted({e.backend for e in results.retrieval}):
            points = sorted((e.dim, e.mean[metric]) for e in results.retrieval if e.backend == backend)
            ax.plot(
                *zip(*points, strict=True),
                styles.get(backend, "-"),
                marker="o",
                color=color,
                label=f"{results.model.label} ({results.model.name}) {backend}",
            )
    ax.set_xscale("log", base=2)
    dims = sorted({e.dim for e in candidate.retrieval})
    ax.set_xticks(dims, [str(d) for d in dims])
    ax.set_xlabel("embedding dimension")
    ax.set_ylabel(metric.upper().replace("@", "@"))
    ax.set_title(f"{metric} vs dimension: candidate vs baseline")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
