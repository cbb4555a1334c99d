"""The human side of an evaluation: a Markdown table and a metric-vs-dimension plot, candidate vs baseline."""

from __future__ import annotations

from pathlib import Path

from gates.evaluation.results import BACKENDS, EvalResults

TABLE_METRICS = ("ndcg@10", "mrr@10", "recall@10", "map@100")


def summary_table(candidate: EvalResults, baseline: EvalResults, data: Path | str, split: str) -> str:
    lines = [
        f"# Evaluation on {data}" + (f" ({split} split)" if candidate.retrieval else " (scored pairs)"),
        "",
        f"candidate: {candidate.model.name}  |  baseline: {baseline.model.name}",
        "",
    ]
    if candidate.retrieval:
        lines += [
            "| model | backend | dim | " + " | ".join(TABLE_METRICS) + " |",
            "|---|---|---:|" + "---:|" * len(TABLE_METRICS),
        ]
        for results in (candidate, baseline):
            for entry in sorted(results.retrieval, key=lambda e: (e.backend, -e.dim)):
                values = " | ".join(f"{entry.mean.get(m, float('nan')):.4f}" for m in TABLE_METRICS)
                lines.append(f"| {results.model.label} | {entry.backend} | {entry.dim} | {values} |")
        n = candidate.retrieval[0].n_queries
        lines += ["", f"{n} judged queries; metrics macro-averaged over queries; ties broken by doc id."]
    if candidate.scored_pairs:
        lines += ["| model | backend | dim | spearman | pearson |", "|---|---|---:|---:|---:|"]
        for results in (candidate, baseline):
            for entry in sorted(results.scored_pairs, key=lambda e: (e.backend, -e.dim)):
                lines.append(
                    f"| {results.model.label} | {entry.backend} | {entry.dim} | {entry.spearman:.4f} | "
                    f"{entry.pearson:.4f} |"
                )
        n = candidate.scored_pairs[0].n_pairs
        lines += ["", f"{n} scored pairs; correlation of cosine similarity with the gold score."]
    if candidate.sts:
        lines += ["", "| model | backend | dim | STS spearman |", "|---|---|---:|---:|"]
        for results in (candidate, baseline):
            for s in results.sts:
                lines.append(f"| {results.model.label} | {s.backend} | {s.dim} | {s.spearman:.4f} |")
    return "\n".join(lines) + "\n"


def plot_metric_vs_dim(
    candidate: EvalResults, baseline: EvalResults, out: Path, metric: str | None = None
) -> Path:
    """`metric` None: ndcg@10 on a retrieval eval set, spearman on scored pairs."""
    metric = metric or ("ndcg@10" if candidate.retrieval else "spearman")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    styles = {"onnx-fp32": "-", "onnx-int8": "--", "torch": ":"}
    for results, color in ((candidate, "tab:blue"), (baseline, "tab:gray")):
        for backend in [b for b in BACKENDS if results.dims(b)]:
            points = [(dim, results.mean_metric(metric, backend, dim)) for dim in results.dims(backend)]
            ax.plot(
                *zip(*points, strict=True),
                styles.get(backend, "-"),
                marker="o",
                color=color,
                label=f"{results.model.label} ({results.model.name}) {backend}",
            )
    ax.set_xscale("log", base=2)
    dims = sorted({d for b in BACKENDS for d in candidate.dims(b)})
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
