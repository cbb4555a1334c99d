"""Judge a compatible graph on the evaluation split, on the exact served graphs, at every dim of the old version:

    old-old   the old version's queries against its own document vectors: what its clients have stored today
    compat    the candidate's queries through the compatible graph, against the SAME old document vectors
    new-new   the candidate against its own document vectors: what a full re-embedding would give

    current   (after an earlier compatible upgrade) what `champion@<old>` serves that space today, e.g. v0002@v0001

The space is offered only when compat beats old-old beyond noise at the old version's serving dim (the one its
clients stored unless they asked for another; one-sided paired randomization p < alpha and the bootstrap interval
above 0, the gate's improvement rule) and no dim loses beyond noise (interval below 0). When an earlier version
already answers in that space, the same two rules hold against it too: clients of `champion@v0001` move to the new
space only for a gain beyond noise over what they get today, so a chain of upgrades never takes a step back.
The map does not change the candidate, so new-new is exactly the candidate's own result: the price of
compatibility is zero by construction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

PRIMARY = "ndcg@10"
ALPHA = 0.05


@dataclass(frozen=True)
class CompatVerdict:
    old_version: str
    offered: bool
    reason: str
    serving_dim: int  # the old version's serving dim (the default `dimensions` of the compatible name)
    rows: list[dict] = field(default_factory=list)  # one per old dim
    current: str | None = None  # what champion@<old> serves in that space today, when another version does

    def to_dict(self) -> dict:
        return {
            "old_version": self.old_version,
            "offered": self.offered,
            "reason": self.reason,
            "serving_dim": self.serving_dim,
            "metric": PRIMARY,
            "current": self.current,
            "rows": self.rows,
        }


MIN_UNSEEN = 10  # queries: fewer cannot show a loss on new answers beyond noise, so that guard is skipped


def judge(
    old_version: str,
    old_serving_dim: int,
    per_dim: dict[int, dict[str, dict[str, float]]],
    alpha: float = ALPHA,
    unseen: set[str] | None = None,
    current: str | None = None,
) -> CompatVerdict:
    """`per_dim[dim]` = {"old-old": {qid: score}, "compat": {...}, "new-new": {...} (optional), "current": {...}
    (when `current`, the name of what champion@<old> serves in that space today, is given)}. `unseen`: the
    query ids none of whose answers a training query had. The map is trained against the whole stored corpus, so
    it can learn which documents are answers; where the eval set shares answers with training (65% of SciFact's
    test queries), that inflates compat. A space that loses beyond noise on the unseen-answer queries at any dim is
    refused: clients asking about anything new would be worse off."""
    from gates.evaluation.significance import compare_paired

    rows, losing, losing_unseen, losing_current = [], [], [], []
    serving = None
    for dim in sorted(per_dim, reverse=True):
        scores = per_dim[dim]
        comparison = compare_paired(scores["compat"], scores["old-old"], seed=dim)
        row = {
            "dim": dim,
            "old-old": round(comparison.mean_baseline, 4),
            "compat": round(comparison.mean_candidate, 4),
            "new-new": round(_mean(scores["new-new"]), 4) if scores.get("new-new") else None,
            "delta": round(comparison.mean_delta, 4),
            "ci": [round(comparison.ci_low, 4), round(comparison.ci_high, 4)],
            "p_value": round(comparison.p_value_greater, 4),
            "queries": comparison.n,
            "beyond_noise": _noise(comparison, alpha),
        }
        if unseen is not None and len(unseen & set(scores["compat"])) >= MIN_UNSEEN:
            on_new = compare_paired(
                {q: v for q, v in scores["compat"].items() if q in unseen},
                {q: v for q, v in scores["old-old"].items() if q in unseen},
                seed=dim,
            )
            row["unseen_answers"] = {
                "queries": on_new.n,
                "delta": round(on_new.mean_delta, 4),
                "ci": [round(on_new.ci_low, 4), round(on_new.ci_high, 4)],
            }
            if on_new.ci_high < 0:
                losing_unseen.append(dim)
        if current is not None:
            against = compare_paired(scores["compat"], scores["current"], seed=dim)
            row["current"] = round(against.mean_baseline, 4)
            row["vs_current"] = {
                "delta": round(against.mean_delta, 4),
                "ci": [round(against.ci_low, 4), round(against.ci_high, 4)],
                "p_value": round(against.p_value_greater, 4),
                "beyond_noise": _noise(against, alpha),
            }
            if against.ci_high < 0:
                losing_current.append(dim)
        gain_new = (row["new-new"] - row["old-old"]) if row["new-new"] is not None else None
        row["recovered"] = round(row["delta"] / gain_new, 3) if gain_new and gain_new > 0 else None
        rows.append(row)
        if row["beyond_noise"] == "loss":
            losing.append(dim)
        if dim == old_serving_dim:
            serving = row

    def verdict(offered: bool, reason: str) -> CompatVerdict:
        return CompatVerdict(old_version, offered, reason, old_serving_dim, rows, current)

    if serving is None:
        return verdict(False, f"no score at {old_version}'s serving dim {old_serving_dim}")
    if losing:
        return verdict(
            False, f"refused: compat loses to {old_version}'s own queries beyond noise at dim(s) {losing}"
        )
    if losing_current:
        return verdict(
            False,
            f"refused: compat loses to {current}, what champion@{old_version} serves today, beyond noise at "
            f"dim(s) {losing_current}; its clients keep {current}",
        )
    if losing_unseen:
        n = rows[0]["unseen_answers"]["queries"]
        reason = (
            f"refused: on the {n} eval queries whose answers no training query had, compat loses to "
            f"{old_version}'s own queries beyond noise at dim(s) {losing_unseen} (its gain comes from answers "
            f"seen in training); its clients keep {old_version} (or re-embed)"
        )
        return verdict(False, reason)
    interval = f"{serving['delta']:+.4f} {PRIMARY} (95% CI [{serving['ci'][0]:+.4f}, {serving['ci'][1]:+.4f}], p={serving['p_value']:.4f})"
    if serving["beyond_noise"] != "gain":
        return verdict(
            False,
            f"refused: at {old_version}'s serving dim {old_serving_dim} compat vs old-old {interval} is not a gain "
            f"beyond noise, so its clients would gain nothing certain; they keep {current or old_version} (or "
            f"re-embed)",
        )
    if current is not None and serving["vs_current"]["beyond_noise"] != "gain":
        c = serving["vs_current"]
        return verdict(
            False,
            f"refused: at {old_version}'s serving dim {old_serving_dim} compat vs {current} (what "
            f"champion@{old_version} serves today) {c['delta']:+.4f} {PRIMARY} (95% CI [{c['ci'][0]:+.4f}, "
            f"{c['ci'][1]:+.4f}], p={c['p_value']:.4f}) is not a gain beyond noise; its clients keep {current}",
        )
    recovered = (
        f", {serving['recovered']:.0%} of the re-embedding gain" if serving["recovered"] is not None else ""
    )
    over_current = (
        f", and {current} (served today) by {serving['vs_current']['delta']:+.4f}"
        if current is not None
        else ""
    )
    return verdict(
        True,
        f"offered: at {old_version}'s serving dim {old_serving_dim} compat beats old-old by {interval}{recovered}"
        f"{over_current}; no dim loses beyond noise",
    )


def _noise(comparison, alpha: float) -> str:
    if comparison.is_significant(alpha):
        return "gain"
    return "loss" if comparison.ci_high < 0 else "none"


def _mean(scores: dict[str, float]) -> float:
    return sum(scores.values()) / len(scores)


def evaluate_compatible(
    run_onnx: Path,
    compat_onnx: Path,
    old_version: str,
    old_onnx: Path,
    old_serving_dim: int,
    eval_data: Path,
    split: str = "test",
    cache_dir: Path | None = None,
    quiet: bool = True,
    trained_answers: set[str] | None = None,
    current: tuple[str, Path] | None = None,
) -> CompatVerdict:
    """`trained_answers`: the texts of the training queries' relevant documents (for the unseen-answer guard).
    `current`: (name, compatible export) of what champion@<old> serves in that space today, when not the old
    version itself (e.g. ("v0002@v0001", <registry>/v0002/compat/v0001/onnx))."""
    from gates.compat.encode import encode_roles
    from gates.evaluation.evaluate import load_eval_set

    view, pairs = load_eval_set(eval_data, split)
    if view is None:
        return CompatVerdict(
            old_version,
            False,
            "not judged: the evaluation set is scored pairs, not retrieval",
            old_serving_dim,
        )
    qrels = {q: docs for q, docs in view.qrels.items() if q in view.queries}
    query_ids, doc_ids = sorted(qrels), sorted(view.corpus)
    queries, docs = [view.queries[q] for q in query_ids], [view.corpus[d] for d in doc_ids]
    old_q, old_d = encode_roles(old_onnx, queries, docs, cache_dir, f"compat {old_version}", quiet)
    new_q, new_d = encode_roles(run_onnx, queries, docs, cache_dir, "compat new", quiet)
    compat_q, _ = encode_roles(compat_onnx, queries, [], cache_dir, "compat queries", quiet)
    current_q = None
    if current is not None:
        current_q, _ = encode_roles(current[1], queries, [], cache_dir, f"compat {current[0]}", quiet)
    dims = json.loads((Path(compat_onnx) / "embedder.json").read_text())["dims"]
    new_dims = set(json.loads((Path(run_onnx) / "embedder.json").read_text())["dims"])
    per_dim = {}
    for dim in dims:
        per_dim[dim] = {
            "old-old": _scores(dim, old_q, old_d, query_ids, doc_ids, qrels),
            "compat": _scores(dim, compat_q, old_d, query_ids, doc_ids, qrels),
        }
        if dim in new_dims:
            per_dim[dim]["new-new"] = _scores(dim, new_q, new_d, query_ids, doc_ids, qrels)
        if current_q is not None:
            per_dim[dim]["current"] = _scores(dim, current_q, old_d, query_ids, doc_ids, qrels)
    unseen = None
    if trained_answers is not None:
        unseen = {q for q in query_ids if not any(view.corpus.get(d) in trained_answers for d in qrels[q])}
    return judge(
        old_version, old_serving_dim, per_dim, unseen=unseen, current=current[0] if current else None
    )


def _scores(dim, q, d, query_ids, doc_ids, qrels) -> dict[str, float]:
    """Per-query PRIMARY at `dim`: the evaluation's own retrieval scoring, on vectors already encoded."""
    from gates.evaluation.evaluate import _retrieval_at

    result = _retrieval_at("onnx-fp32", dim, q, d, query_ids, doc_ids, qrels)
    return {qid: values[PRIMARY] for qid, values in result.per_query.items()}
