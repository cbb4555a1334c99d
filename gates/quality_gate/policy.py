"""The quality gate's policy: a declarative YAML spec loaded into validated pydantic models.

    from gates.quality_gate.policy import default_policy, load_policy
    policy = default_policy()                      # gates/quality_gate/policies/default.yaml
    policy = load_policy("my_policy.yaml")         # errors name the file, the field and the bad value

A policy names the primary metric, how to pick the serving dim, and a list of checks. Every check has a
`name`, a `kind`, a `severity` (critical checks block promotion, warnings are reported and never block),
and reads one backend (onnx-fp32 | onnx-int8 | torch) at one dim (an int, or "serving"). Kinds:
- improvement: candidate - baseline must be > 0, >= min_absolute and >= min_relative x baseline, and, with
  `significance`, better beyond noise: one-sided p < alpha and the bootstrap CI of the delta above 0.
- no_regression: candidate >= baseline - tolerance, for each metric listed (one decision row per metric).
- parity: every selected ONNX graph reproduces the PyTorch model with min cosine >= threshold (parity record).
- retention: int8 keeps >= fraction of the candidate's fp32 metric. severity `auto` is critical only when the
  policy's serve_precision is int8 (a warning while int8 is not what ships).
- (spearman / pearson instead of a retrieval key: an STS eval set's correlation, see policies/scored_pairs.yaml)
- general_domain: a general-domain STS correlation may not drop more than `tolerance` below the baseline's;
  skipped, with the reason recorded, when the evaluation produced no STS results.
`serving_dim: auto` picks the smallest dim whose primary metric (candidate, onnx-fp32) is within
`serving_dim_fraction` of the largest dim's, and whose lower 95% bound of that share is at least
`serving_dim_fraction - serving_dim_margin` (a non-inferiority margin; 0 = the bound itself must reach the fraction). gates.quality_gate.decision applies a policy to evaluation results.
Each kind's spec and evaluator live in gates.quality_gate.checks (one module per kind).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from gates.errors import EmbedgateGateError
from gates.evaluation.results import validation_error_text
from gates.quality_gate.check_base import Spec, gate_metric
from gates.quality_gate.checks import Check

DEFAULT_POLICY_FILE = "policies/default.yaml"  # inside the gates.quality_gate package
SCORED_PAIRS_POLICY_FILE = "policies/scored_pairs.yaml"  # the default when the eval set is STS (scored pairs)


class PolicyError(EmbedgateGateError):
    """A gate policy file cannot be read or does not validate."""


class GatePolicy(Spec):
    """What a candidate must show to replace the baseline. Validated at construction."""

    name: str = "custom"
    primary_metric: str = "ndcg@10"
    serving_dim: int | Literal["auto"] = "auto"
    serving_dim_fraction: float = Field(0.99, gt=0, le=1)
    serving_dim_margin: float = Field(0.02, ge=0, lt=1)
    serve_precision: Literal["fp32", "int8"] = "fp32"
    checks: tuple[Check, ...] = Field(min_length=1)

    @field_validator("primary_metric")
    @classmethod
    def _primary(cls, key: str) -> str:
        return gate_metric(key)

    @field_validator("serving_dim")
    @classmethod
    def _serving_dim(cls, dim: int | str) -> int | str:
        if isinstance(dim, int) and dim <= 0:
            raise ValueError(f"serving_dim must be a positive int or 'auto', got {dim}")
        return dim

    @model_validator(mode="after")
    def _margin_below_fraction(self) -> GatePolicy:
        if self.serving_dim_margin >= self.serving_dim_fraction:
            raise ValueError(
                f"serving_dim_margin ({self.serving_dim_margin}) must be below serving_dim_fraction "
                f"({self.serving_dim_fraction}): the lower bound a dim must reach is fraction - margin; "
                f"lower the margin (0.02 is the default)"
            )
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> GatePolicy:
        names = [check.name for check in self.checks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"check names must be unique; repeated: {', '.join(duplicates)}")
        return self


def load_policy(path: str | Path) -> GatePolicy:
    """Read and validate a policy YAML file; errors name the file, the line or field, and the bad value."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise PolicyError(f"{path}: cannot read the gate policy ({err.strerror}); check the path") from None
    except UnicodeDecodeError as err:
        raise PolicyError(
            f"{path}: not UTF-8 text (byte {err.start}); save the policy as UTF-8 YAML"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise PolicyError(f"{path}:{where}: not valid YAML: {problem}") from None
    return policy_from_dict(data, source=str(path))


def policy_from_dict(data: Any, source: str = "gate policy") -> GatePolicy:
    if not isinstance(data, Mapping):
        raise PolicyError(
            f"{source}: expected a mapping with primary_metric, serving_dim and checks, "
            f"got {type(data).__name__}"
        )
    try:
        return GatePolicy.model_validate(data)
    except ValidationError as err:
        raise PolicyError(
            f"{source}: invalid gate policy{_check_names(err, data)}:\n{validation_error_text(err)}"
        ) from None


def default_policy(scored_pairs: bool = False) -> GatePolicy:
    """The policy shipped with embedgate (gates/quality_gate/policies/default.yaml): retrieval metrics; with
    `scored_pairs`, the one for an STS eval set (policies/scored_pairs.yaml: Spearman, bootstrap over pairs)."""
    from importlib.resources import files

    name = SCORED_PAIRS_POLICY_FILE if scored_pairs else DEFAULT_POLICY_FILE
    return load_policy(Path(str(files("gates.quality_gate").joinpath(name))))


def _check_names(err: ValidationError, data: Mapping[str, Any]) -> str:
    """Name the checks the errors point into: 'checks[2]' alone is hard to find in a long file."""
    checks = data.get("checks")
    named = []
    for problem in err.errors():
        loc = problem["loc"]
        if len(loc) > 1 and loc[0] == "checks" and isinstance(loc[1], int) and isinstance(checks, list):
            entry = checks[loc[1]] if loc[1] < len(checks) else None
            if isinstance(entry, Mapping) and "name" in entry:
                named.append(f"checks[{loc[1]}] is {entry['name']!r}")
    return f" ({'; '.join(dict.fromkeys(named))})" if named else ""
