"""Copy a BEIR folder without the train judgements of queries whose text also appears in the test split.

    python benchmarks/drop_leaked_queries.py ../shared/datasets/scifact artifacts/datasets/scifact-clean

The data gate refuses SciFact as shipped: two claims are in it twice under different ids, one judged in train and
one in test ("Obesity decreases life quality." 871/870, and 1291/1292). Fixing that the way a user would, by
dropping the train copies, leaves the test split (and so every published test number) untouched. Texts are
compared exactly as the data gate compares them (gates.data_gate.derived.normalise_text).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def drop_leaked(src: Path, out: Path, train: str = "train", test: str = "test") -> list[str]:
    import pandas as pd

    from gates.data_gate.derived import normalise_text
    from training.data.beir import load_beir

    data = load_beir(src)
    texts = data.query_texts()
    norm = dict(zip(texts, normalise_text(pd.Series(list(texts.values()))).tolist(), strict=True))
    test_texts = {norm[q] for q in data.split(test).qrels if q in norm}
    leaked = sorted(q for q in data.split(train).qrels if norm.get(q) in test_texts)
    shutil.copytree(src, out, dirs_exist_ok=False)
    qrels = out / "qrels" / f"{train}.tsv"
    qrels.chmod(0o644)
    lines = qrels.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for i, line in enumerate(lines) if i == 0 or line.split("\t")[0] not in leaked]
    qrels.write_text("".join(kept), encoding="utf-8")
    return leaked


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    print(f"dropped the train judgements of queries {drop_leaked(args.src, args.out)}")
