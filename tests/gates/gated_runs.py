"""Runs as the promotion tests need them: an export and a gate decision on disk (no training), and a re-gate that
records a registry's current champion as the baseline."""

from __future__ import annotations

import json
from pathlib import Path

from service.registry.registry import Registry
from training.run_dir import RunPaths


def make_gated_run(tmp_path: Path, name: str, passed: bool, registry: Path | str | None = None) -> RunPaths:
    """A run with an export and a gate decision. `registry`: the decision records that registry's current
    champion as the baseline, as a gate run against it would (None: the base model)."""
    run = RunPaths(tmp_path / "runs" / name)
    (run.onnx / "d32").mkdir(parents=True)
    (run.onnx / "d32" / "model.onnx").write_bytes(f"graph of {name}".encode())
    (run.onnx / "embedder.json").write_text("{}")
    run.gate.mkdir(parents=True)
    checks = [
        {
            "check": "primary_improves",
            "kind": "improvement",
            "metric": "ndcg@10",
            "status": "pass" if passed else "fail",
            "severity": "critical",
            "candidate": 0.7,
            "baseline": 0.6,
            "delta": 0.1,
            "p_value": 0.001 if passed else 0.3,
            "reason": "ok" if passed else "delta +0.0020 not significant (p=0.300 >= 0.05)",
        }
    ]
    (run.gate / "decision.json").write_text(
        json.dumps(
            {
                "passed": passed,
                "serving_dim": 32,
                "baseline": "base model",
                "checks": checks,
                "policy": {"serve_precision": "fp32"},
            }
        )
    )
    (run.root / "config.yaml").write_text("data: {path: x}\n")
    if registry is not None:
        regate(run, registry)
    return run


def regate(run: RunPaths, registry: Path | str) -> None:
    """Record `registry`'s current champion as the run's gate baseline (what re-running the gate against it does;
    the scores stay)."""
    reg = Registry(registry)
    champion = reg.champion()
    decision = json.loads((run.gate / "decision.json").read_text())
    decision.update(
        baseline=f"champion {champion.version}" if champion else "base model",
        baseline_version=champion.version if champion else None,
        baseline_fingerprint=reg.fingerprint(champion.version) if champion else None,
    )
    (run.gate / "decision.json").write_text(json.dumps(decision))
