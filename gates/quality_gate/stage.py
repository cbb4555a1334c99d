"""The quality gate stage: read a run's evaluation and export parity, apply the policy, write gate/decision.json.

embedgate gate artifacts/runs/<run_id> [--policy my_policy.yaml]
"""

from __future__ import annotations

import json
from pathlib import Path

from gates.errors import RunDirectoryError
from gates.evaluation.results import EvalResults, ParityRecord
from gates.quality_gate.decision import GateDecision, decide
from gates.quality_gate.policy import default_policy, load_policy
from training.run_dir import RunPaths, write_json_atomic


def read_results(run: RunPaths) -> tuple[EvalResults, EvalResults]:
    out = []
    for role in ("candidate", "baseline"):
        path = run.eval / f"{role}.json"
        if not path.is_file():
            raise RunDirectoryError(
                f"{path} is missing: evaluate the run first (embedgate evaluate {run.root} --data BEIR_DIR)"
            )
        out.append(EvalResults.from_json(path.read_text(encoding="utf-8"), source=str(path)))
    return out[0], out[1]


def read_parity(run: RunPaths) -> ParityRecord:
    path = run.onnx / "export.json"
    if not path.is_file():
        raise RunDirectoryError(f"{path} is missing: export the run first (embedgate export {run.root})")
    return ParityRecord.from_export_json(json.loads(path.read_text(encoding="utf-8")), source=str(path))


def run_gate(run: RunPaths, policy_path: Path | None = None) -> GateDecision:
    """No policy given: the packaged default for what was evaluated (retrieval on a BEIR folder, Spearman on an
    STS eval set)."""
    candidate, baseline = read_results(run)
    policy = load_policy(policy_path) if policy_path else default_policy(not candidate.retrieval)
    decision = decide(policy, candidate, baseline, parity=read_parity(run))
    run.gate.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run.gate / "decision.json", decision.to_dict() | {"run_id": run.run_id})
    (run.gate / "decision.txt").write_text(decision.table() + "\n", encoding="utf-8")
    return decision


def read_decision(run: RunPaths) -> dict:
    path = run.gate / "decision.json"
    if not path.is_file():
        raise RunDirectoryError(
            f"{path} is missing: gate the run first (embedgate gate {run.root}) or run the "
            f"whole pipeline (embedgate pipeline CONFIG)"
        )
    return json.loads(path.read_text(encoding="utf-8"))
