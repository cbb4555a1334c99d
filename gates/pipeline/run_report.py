"""One self-contained HTML page per run: what the data gate found, how training went, candidate vs baseline per
dim and backend, the gate's decision with its significance figures, the advisor's advice, the promotion outcome
and where the time went.

    embedgate report artifacts/runs/<run_id>         # (re)builds RUN/report.html and prints its path

Everything is read from the files the stages wrote (pipeline.json, data/report.json, train/summary.json,
train/train_log.jsonl, eval/*.json, gate/decision.json), so a report can be rebuilt for any run, finished or not;
a section whose stage did not run says so. The page works offline: the plots the stages drew are inlined as
base64 PNG, the style is inline, and nothing is fetched (no CDN, no fonts, no scripts). Rendered with Jinja2
(autoescaped: the texts in it come from user data).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from gates.errors import RunDirectoryError
from training.run_dir import RunPaths

TEMPLATE = Path(__file__).with_name("run_report.html")
METRICS = ("ndcg@10", "mrr@10", "recall@10")
PAIR_METRICS = ("spearman", "pearson")  # an STS eval set (scored pairs)


def build_report(run: RunPaths) -> Path:
    """Write RUN/report.html (through a temp file and os.replace) and return its path."""
    if not run.root.is_dir():
        raise RunDirectoryError(f"{run.root}: no such run directory; expected a folder under artifacts/runs/")
    import jinja2

    env = jinja2.Environment(
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    env.filters["num"] = _num
    html = env.from_string(TEMPLATE.read_text(encoding="utf-8")).render(**report_context(run))
    out = run.root / "report.html"
    tmp = out.with_name(".report.html.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    return out


def report_context(run: RunPaths) -> dict[str, Any]:
    """What the page shows, as plain data (None where the stage did not run)."""
    pipeline = _json(run.root / "pipeline.json")
    summary = _json(run.train / "summary.json")
    candidate, baseline = _json(run.eval / "candidate.json"), _json(run.eval / "baseline.json")
    return {
        "run_id": run.run_id,
        "pipeline": pipeline,
        "stages": (pipeline or {}).get("stages", []),
        "total_seconds": sum(s.get("seconds", 0) for s in (pipeline or {}).get("stages", [])),
        "data_gate": _data_gate(_json(run.data / "report.json")),
        "training": summary,
        "dev_log": _dev_log(run.train_log),
        "loss_png": _png(run.loss_curve),
        "metrics": _metric_rows(candidate, baseline),
        "candidate_name": (candidate or {}).get("model", {}).get("name"),
        "baseline_name": (baseline or {}).get("model", {}).get("name"),
        "metrics_png": _png(run.eval / "metrics_vs_dim.png"),
        "cache": _json(run.eval / "cache.json"),
        "timings": _json(run.eval / "timings.json"),
        "decision": _json(run.gate / "decision.json"),
        "promotion": (pipeline or {}).get("promotion"),
        # backward-compatible spaces (gates/compat/): one verdict per old version, with old-old/compat/new-new
        "compat": [_json(path) for path in sorted((run.root / "compat").glob("v*/compat.json"))],
    }


def _json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunDirectoryError(f"{path}: not valid JSON ({err}); the run directory is damaged") from None


def _png(path: Path) -> str | None:
    return base64.b64encode(path.read_bytes()).decode("ascii") if path.is_file() else None


def _data_gate(report: dict | None) -> dict | None:
    if report is None:
        return None
    failed = [e for e in report.get("expectations", []) if not e.get("passed")]
    return {
        "passed": report.get("passed"),
        "summary": report.get("summary", {}),
        "rows": report.get("dataset", {}).get("rows", {}),
        "type": report.get("dataset", {}).get("type"),
        "failed": failed,
    }


def _dev_log(path: Path) -> list[dict]:
    """One row per dev evaluation: epoch, step, the mean and per-dim dev NDCG@10."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line) if line.strip() else {}
        dev = {k.removeprefix("eval_dev_"): v for k, v in record.items() if k.startswith("eval_dev_ndcg@10")}
        if dev:
            rows.append({"epoch": record.get("epoch"), "step": record.get("step"), **dev})
    return rows


def _metric_rows(candidate: dict | None, baseline: dict | None) -> list[dict]:
    """Per (backend, dim): candidate and baseline means of METRICS (baseline: onnx-fp32 when its backend is
    missing) and the delta of the first; Spearman and Pearson for an STS eval set (scored pairs)."""
    if candidate is None:
        return []
    base = {(e["backend"], e["dim"]): e["mean"] for e in (baseline or {}).get("retrieval", [])}
    base |= {(e["backend"], e["dim"]): e for e in (baseline or {}).get("scored_pairs", [])}
    entries = [(e, e["mean"], METRICS, e.get("n_queries"), "queries") for e in candidate.get("retrieval", [])]
    entries += [(e, e, PAIR_METRICS, e.get("n_pairs"), "pairs") for e in candidate.get("scored_pairs", [])]
    rows = []
    for entry, values, metrics, n, unit in sorted(entries, key=lambda e: (e[0]["backend"], -e[0]["dim"])):
        other = base.get((entry["backend"], entry["dim"])) or {}
        cells = [(m, values.get(m), other.get(m)) for m in metrics]
        rows.append(
            {
                "backend": entry["backend"],
                "dim": entry["dim"],
                "n": n,
                "unit": unit,
                "cells": cells,
                "has_baseline": bool(other),
            }
        )
    return rows


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)
