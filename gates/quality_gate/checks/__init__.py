"""One module per check kind: its spec (validated when a policy loads) and its evaluator (spec, context) -> rows.

To add a kind: a module with a `CheckSpec` subclass whose `kind` is a Literal, and an `evaluate`; list both here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from pydantic import Field

from gates.quality_gate.check_base import CheckContext, GateRow
from gates.quality_gate.checks import general_domain, improvement, no_regression, parity, retention
from gates.quality_gate.checks.general_domain import GeneralDomainCheck
from gates.quality_gate.checks.improvement import ImprovementCheck, Significance
from gates.quality_gate.checks.no_regression import NoRegressionCheck
from gates.quality_gate.checks.parity import ParityCheck
from gates.quality_gate.checks.retention import RetentionCheck

Check = Annotated[
    ImprovementCheck | NoRegressionCheck | ParityCheck | RetentionCheck | GeneralDomainCheck,
    Field(discriminator="kind"),
]

EVALUATORS: dict[str, Callable[..., list[GateRow]]] = {
    "improvement": improvement.evaluate,
    "no_regression": no_regression.evaluate,
    "parity": parity.evaluate,
    "retention": retention.evaluate,
    "general_domain": general_domain.evaluate,
}

__all__ = [
    "EVALUATORS",
    "Check",
    "CheckContext",
    "GeneralDomainCheck",
    "ImprovementCheck",
    "NoRegressionCheck",
    "ParityCheck",
    "RetentionCheck",
    "Significance",
]
