"""A team with only a pairs table can gate: the pipeline holds out anchors of its own data, gates on them, and
blocks a model trained on shuffled pairs (whose held-out judgements are noise no model can beat)."""

from __future__ import annotations

import json
import random

import pytest
import yaml

from gates.cli import main
from tests import synthetic

pytestmark = pytest.mark.slow  # two short pipelines on the tiny model


def _lay_jargon_pairs(n: int, seed: int = 4) -> list[tuple[str, str]]:
    """Lay anchors, jargon positives, one positive per anchor: what fine-tuning learns is the topic link."""
    rng = random.Random(seed)
    rows, seen = [], set()
    topics = list(synthetic.LAY_JARGON.values())
    while len(rows) < n:
        lay, jargon = topics[len(rows) % len(topics)]
        anchor = " ".join(rng.sample(lay.split(), 2) + rng.sample(synthetic.FILLER, 3))
        positive = " ".join(rng.sample(jargon.split() * 2, 5) + rng.sample(synthetic.FILLER, 4))
        if anchor not in seen and positive not in seen:
            seen |= {anchor, positive}
            rows.append((anchor, positive))
    return rows


def _config(root, tiny_model_dir, rows, name, saved=False):
    if saved:  # a datasets.save_to_disk folder: same column mapping and data gate as a table file
        import datasets

        data = root / name
        datasets.Dataset.from_dict(
            {"question": [a for a, _ in rows], "answer": [p for _, p in rows]}
        ).save_to_disk(str(data))
    else:
        data = synthetic.write_csv(root / f"{name}.csv", ["question", "answer"], rows)
    config = root / f"{name}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "base_model": str(tiny_model_dir),
                "data": {"path": str(data)},
                "output_dir": str(root / "runs"),
                "epochs": 4,
                "batch_size": 16,
                "learning_rate": 1e-3,
                "matryoshka_dims": [32, 16],
                "seed": 5,
                "run_id": name,
                "evaluation": {"backends": ["onnx-fp32", "onnx-int8"]},
                # Kept cheap: in-batch negatives only, no dev set, no rotation (what is tested is the split and the gate).
                "mining": {"strategy": "none"},
                "dev_fraction": 0.0,
                "rotation": "off",
                "promotion": {"registry": str(root / f"registry-{name}")},
            }
        )
    )
    return config


def test_pairs_only_saved_dataset_pipeline_gates_on_its_own_held_out_split(tmp_path, tiny_model_dir, capsys):
    config = _config(tmp_path, tiny_model_dir, _lay_jargon_pairs(200), "pairs", saved=True)
    code = main(["pipeline", str(config)])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    assert "no BEIR folder given: gating on 40 anchors held out from the training data" in out.out + out.err
    run = tmp_path / "runs" / "pairs"
    split = json.loads((run / "heldout" / "split.json").read_text())
    assert split["eval_anchors"] == 40 and split["train_rows"] == 160
    pipeline = json.loads((run / "pipeline.json").read_text())
    names = [s["name"] for s in pipeline["stages"]]
    assert names[:3] == ["data gate", "held-out split", "mine + train"]
    gate = next(s for s in pipeline["stages"] if s["name"] == "gate")
    assert "held out from the training data" in gate["detail"]["evaluation"]
    assert (run / "heldout" / "data-gate" / "report.json").is_file()  # the leakage check ran on the split


def test_shuffled_pairs_are_not_promoted(tmp_path, tiny_model_dir, capsys):
    rows = _lay_jargon_pairs(200)
    positives = [p for _, p in rows]
    random.Random(0).shuffle(positives)
    config = _config(
        tmp_path, tiny_model_dir, [(a, p) for (a, _), p in zip(rows, positives, strict=True)], "shuffled"
    )
    code = main(["pipeline", str(config)])
    out = capsys.readouterr()
    assert code == 1, out.out + out.err
    assert "BLOCKED: quality gate failed" in out.err
