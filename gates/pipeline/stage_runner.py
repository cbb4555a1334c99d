"""Named pipeline stages, run one at a time: each is timed (wall, CPU, peak RSS), recorded with its status
(passed | blocked | error) and what it produced, and announced to the person watching the run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from gates.errors import EmbedgateGateError

Progress = Callable[[str], None]


class StageBlocked(EmbedgateGateError):
    """A gate said no: the run stops here, with the reason."""


@dataclass
class StageRecord:
    name: str
    status: str  # passed | blocked | skipped | error
    seconds: float
    detail: dict = field(default_factory=dict)
    cpu_seconds: float | None = None  # user + system, this process and its finished children
    peak_rss_mb: float | None = None  # this process and its live children (gates/pipeline/stage_cost.py)


STAGE_DOES = {  # what a person watching the run is told each stage is doing
    "data gate": "checking the training and eval data with the Great Expectations suites ...",
    "mine + train": "mining hard negatives with the base model, then fine-tuning (one line per dev evaluation) ...",
    "export": "exporting one ONNX graph per Matryoshka dim, fp32 and int8 (+ fp16 on a GPU), each checked for parity ...",
    "evaluate": "encoding the eval queries and corpus with the candidate and the baseline (cached ones are "
    "reused) ...",
    "gate": "applying the gate policy (significance over the eval queries, or pairs for STS) ...",
    "drift reference": "embedding the drift reference for the served version ...",
    "promote": "copying the version into the registry and switching the champion ...",
}


class Stages:
    """Runs named stages, timing each and recording its status."""

    def __init__(self, progress: Progress, reword=lambda err: err):
        self.records: list[StageRecord] = []
        self.progress = progress
        self.reword = reword  # an error as the pipeline's user should read it (see config.worded_for_config)

    def run(self, name: str, func, *args, **kwargs):
        from gates.pipeline.stage_cost import measure, release_memory

        self.progress(f"[{name}] {STAGE_DOES.get(name, '...')}")
        outcome: tuple[str, dict] = ("passed", {})
        try:
            with measure() as cost:
                try:
                    return func(*args, **kwargs)
                except StageBlocked as blocked:
                    outcome = ("blocked", {"reason": str(blocked)})
                    raise
                except BaseException as err:
                    reworded = self.reword(err)
                    outcome = ("error", {"error": f"{type(reworded).__name__}: {reworded}"})
                    if reworded is not err:
                        raise reworded from None
                    raise
        finally:
            release_memory()  # what the stage freed goes back to the system, not into the next stage's peak
            self._record(name, *outcome, cost)

    def note(self, **detail) -> None:
        """Attach what the last stage produced (counts, paths) to its record."""
        self.records[-1].detail.update(detail)

    def _record(self, name, status, detail, cost):
        self.records.append(StageRecord(name, status, cost.wall_s, detail, cost.cpu_s, cost.peak_rss_mb))
        self.progress(
            f"[{name}] {status} in {cost.wall_s:.1f}s ({cost.cpu_s:.0f} CPU s, peak RSS {cost.peak_rss_mb:.0f} MB)"
        )
