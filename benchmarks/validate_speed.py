"""Time the data gate on a synthetic pairs file (the target: 100k rows in under 30 s).

    python benchmarks/validate_speed.py                 # 100,000 rows
    python benchmarks/validate_speed.py --rows 20000 --repeats 3
    python benchmarks/validate_speed.py --positive-words 40 60   # passages: every positive gets tokenised

Short texts (the default) are cleared by the token bound in gates/data_gate/tokens.py without being
tokenised; `--positive-words 40 60` makes every positive longer than the bound, the worst case.
Prints load, validate and write times, and the 1-minute load average of the machine before and after (a busy
neighbour on a 2-core machine slows every stage: compare runs only at similar load). The first `validate`
includes importing Great Expectations (about 3 s); the script reports it separately from the repeats.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

WORDS = (
    "tenant landlord lease rent deposit notice court claim contract clause repair damage fee month "
    "payment insurance policy cover liability breach termination agreement party law legal"
).split()


def write_pairs(path: Path, rows: int, positive_words: tuple[int, int] = (15, 25), seed: int = 0) -> None:
    """Questions of 12-17 words and answers of `positive_words` words, with a few defects so that failing
    checks do their work too."""
    import pandas as pd

    rng = random.Random(seed)
    anchors = [" ".join(rng.choices(WORDS, k=rng.randint(12, 17))) + f" {i}?" for i in range(rows)]
    positives = [" ".join(rng.choices(WORDS, k=rng.randint(*positive_words))) for _ in range(rows)]
    for i in range(0, rows, 1000):  # 0.1% blank anchors, 0.1% anchor == positive
        anchors[i] = "  "
        positives[i + 1] = anchors[i + 1] if i + 1 < rows else positives[i]
    pd.DataFrame({"anchor": anchors, "positive": positives}).to_csv(path, index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs after the first (import) run")
    parser.add_argument("--positive-words", type=int, nargs=2, default=(15, 25), metavar=("MIN", "MAX"))
    args = parser.parse_args()
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

    from gates.data_gate import validate_dataset, write_report
    from training.data.loading import load_dataset

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.csv"
        write_pairs(path, args.rows, tuple(args.positive_words))
        print(
            f"rows={args.rows:,} positive_words={args.positive_words} cpus={os.cpu_count()} loadavg_before={os.getloadavg()[0]:.2f}"
        )
        for run in range(args.repeats + 1):
            start = time.perf_counter()
            data = load_dataset(path)
            loaded = time.perf_counter()
            report = validate_dataset(data)
            validated = time.perf_counter()
            write_report(report, Path(tmp) / "out")
            written = time.perf_counter()
            label = "first (incl. GX import)" if run == 0 else f"repeat {run}"
            print(
                f"{label:24s} load {loaded - start:5.2f}s  validate {validated - loaded:5.2f}s  "
                f"write {written - validated:5.2f}s  total {written - start:5.2f}s  "
                f"failed={len(report.failures)} loadavg={os.getloadavg()[0]:.2f}"
            )


if __name__ == "__main__":
    main()
