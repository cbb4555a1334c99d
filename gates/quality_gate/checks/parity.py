"""parity: every selected ONNX graph reproduces the PyTorch model (min cosine >= threshold, from the export's
parity record), so the gated numbers are the served model's.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gates.errors import MissingMetricError
from gates.quality_gate.check_base import CheckContext, CheckSpec, GateRow


class ParityCheck(CheckSpec):
    kind: Literal["parity"]
    backend: Literal["onnx-fp32", "onnx-int8"] = "onnx-fp32"
    dim: int | Literal["serving", "all"] = "all"  # all: every exported graph of that backend
    threshold: float = Field(0.9999, gt=0, le=1)


def evaluate(check: ParityCheck, ctx: CheckContext) -> list[GateRow]:
    if ctx.parity is None:
        raise MissingMetricError(
            "needs the export's parity record and none was given; pass "
            "parity=ParityRecord.from_export_json(<run>/onnx/export.json)"
        )
    graphs = ctx.parity.select(check.backend, None if check.dim == "all" else ctx.dim(check.dim))
    rows = []
    for graph in sorted(graphs, key=lambda g: g.dim):
        ok = graph.min_cosine >= check.threshold
        where = f" ({graph.graph})" if graph.graph else ""
        relation = ">=" if ok else "<"
        reason = (
            f"min cosine to the PyTorch model {graph.min_cosine:.6f}{where} {relation} {check.threshold:g}"
        )
        rows.append(
            GateRow(
                check=check.name,
                kind=check.kind,
                metric="min_cosine",
                dim=graph.dim,
                backend=graph.backend,
                candidate=graph.min_cosine,
                baseline=None,
                delta=None,
                threshold=f"min cosine >= {check.threshold:g}",
                threshold_fields={"threshold": check.threshold},
                status="pass" if ok else "fail",
                severity=check.severity,
                reason=reason,
            )
        )
    return rows
