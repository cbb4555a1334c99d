"""The quality gate: a declarative policy applied to evaluation results, one row per check.

- `policy`: the YAML policy loaded into validated pydantic specs (`policies/default.yaml` ships).
- `decision`: `decide` applies the policy and returns an immutable `GateDecision`.
- `stage`: the pipeline stage: read a run's evaluation and parity, decide, write `gate/decision.json`.
"""
