"""Pipeline stages that several commands share. Each takes typed inputs, writes into the run directory, and
returns a typed result; none prints or exits (the CLI decides what to show and the exit code)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.config import TrainConfig


@dataclass(frozen=True)
class DataGateOutcome:
    passed: bool
    report: object  # gates.data_gate.DataGateReport
    written: object  # gates.data_gate.WrittenReport

    @property
    def summary(self) -> str:
        from gates.data_gate.console import summary_text

        return summary_text(self.report, self.written)


def data_gate(config: TrainConfig, out_dir: Path, data: Any = None) -> DataGateOutcome:
    """Validate the training data (and its eval set, for leakage) with the data gate; write report + Data Docs.
    data: config.data already loaded (the pipeline's one load); read from config.data when None."""
    from gates.data_gate import validate_dataset, write_report
    from training.data.loading import load_dataset
    from training.models import is_main_process, resolve_model_path

    if data is None:
        data = load_dataset(config.data.path, config.data.type, config.data.columns)
    eval_data = None
    if config.data.eval_path is not None and Path(config.data.eval_path) != Path(config.data.path):
        eval_data = load_dataset(config.data.eval_path)
    tokenizer = resolve_model_path(config.base_model)
    report = validate_dataset(
        data, eval_data=eval_data, max_seq_length=config.max_seq_length, tokenizer=tokenizer
    )
    written = write_report(report, out_dir) if is_main_process() else None
    return DataGateOutcome(report.passed, report, written)


def validate_mined(path: Path, eval_path: Path | None, tokenizer: Path | None = None) -> DataGateOutcome:
    """The mined set is itself a hard-negatives dataset: it must pass the data gate (and not leak eval queries)."""
    from gates.data_gate import validate_dataset, write_report
    from training.data.loading import load_dataset

    data = load_dataset(path, "hard_negatives")
    eval_data = load_dataset(eval_path) if eval_path is not None else None
    report = validate_dataset(data, eval_data=eval_data, tokenizer=tokenizer)
    written = write_report(report, Path(path).parent / "data-gate")
    return DataGateOutcome(report.passed, report, written)
