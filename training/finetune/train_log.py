"""The training log: one JSON line per Trainer log event (loss, learning rate, dev metrics), and its plot."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback


class JsonlLogCallback(TrainerCallback):
    """Appends `{"step", "epoch", ...logs}` to train_log.jsonl on the main process only."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **logs}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=float) + "\n")


def read_log(path: Path) -> list[dict]:
    if not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def truncate_log_after_checkpoint(path: Path, checkpoint: Path) -> None:
    """On resume, the Trainer replays the steps after the checkpoint: drop their old log lines first."""
    step = int(Path(checkpoint).name.rsplit("-", 1)[-1])
    records = [r for r in read_log(path) if r["step"] <= step]
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def plot_loss_curve(log_path: Path, out: Path) -> Path | None:
    """Training loss (and dev metrics on a second axis) against step, as a PNG."""
    records = read_log(log_path)
    losses = [(r["step"], r["loss"]) for r in records if "loss" in r]
    if not losses:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(*zip(*losses, strict=True), color="tab:blue", label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss", color="tab:blue")
    dev = [(r["step"], r["eval_dev_ndcg@10_mean"]) for r in records if "eval_dev_ndcg@10_mean" in r]
    if dev:
        ax2 = ax.twinx()
        ax2.plot(
            *zip(*dev, strict=True), color="tab:orange", marker="o", label="dev NDCG@10 (mean over dims)"
        )
        ax2.set_ylabel("dev NDCG@10", color="tab:orange")
    ax.set_title("embedgate training")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
