"""A team with only scored pairs (STS) can gate: the pipeline holds out pairs of its own data by sentence, gates
on Spearman through the served graphs, and blocks a model trained on shuffled scores."""

from __future__ import annotations

import json
import random

import pytest
import yaml

from gates.cli import main
from tests import synthetic

pytestmark = pytest.mark.slow  # two short pipelines on the tiny model


def _lay_jargon_scored(n: int, seed: int = 4) -> list[tuple[str, str, float]]:
    """Lay sentence1, jargon sentence2: a high score when both are of one topic, a low one otherwise. What
    fine-tuning learns is which lay words go with which jargon (the tiny model starts with no link). Every fourth
    pair reuses the previous pair's sentence1, so the split has pairs that must stay together."""
    rng = random.Random(seed)
    topics = list(synthetic.LAY_JARGON.values())
    rows: list[tuple[str, str, float]] = []
    seen: set[str] = set()
    topic = 0
    while len(rows) < n:
        reuse = len(rows) % 4 == 3
        if not reuse:
            topic = rng.randrange(len(topics))
        same = len(rows) % 2 == 0
        other = topic if same else (topic + rng.randrange(1, len(topics))) % len(topics)
        first = (
            rows[-1][0]
            if reuse
            else " ".join(rng.sample(topics[topic][0].split(), 2) + rng.sample(synthetic.FILLER, 3))
        )
        second = " ".join(rng.sample(topics[other][1].split() * 2, 4) + rng.sample(synthetic.FILLER, 3))
        if second in seen or (first in seen and not reuse):
            continue
        seen |= {first, second}
        rows.append((first, second, round(rng.uniform(4, 5) if same else rng.uniform(0, 1), 2)))
    return rows


def _config(root, tiny_model_dir, rows, name):
    data = synthetic.write_csv(root / f"{name}.csv", ["sentence1", "sentence2", "score"], rows)
    config = root / f"{name}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "base_model": str(tiny_model_dir),
                "data": {"path": str(data)},
                "output_dir": str(root / "runs"),
                "epochs": 8,
                "batch_size": 16,
                "learning_rate": 1e-3,
                "matryoshka_dims": [32, 16],
                "seed": 5,
                "run_id": name,
                "evaluation": {"backends": ["onnx-fp32", "onnx-int8"]},
                # Kept cheap: no dev set, no rotation (what is tested is the split and the gate).
                "dev_fraction": 0.0,
                "rotation": "off",
                "promotion": {"registry": str(root / f"registry-{name}")},
            }
        )
    )
    return config


def test_sts_pipeline_gates_on_spearman_over_its_held_out_pairs(tmp_path, tiny_model_dir, capsys):
    config = _config(tmp_path, tiny_model_dir, _lay_jargon_scored(200), "sts")
    code = main(["pipeline", str(config)])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    assert "no BEIR folder given: gating on Spearman over" in out.out + out.err
    run = tmp_path / "runs" / "sts"
    split = json.loads((run / "heldout" / "split.json").read_text())
    assert split["shared_sentences"] == 0 and split["eval_pairs"] + split["train_pairs"] == 200
    held = [json.loads(line) for line in (run / "heldout" / "eval.jsonl").read_text().splitlines()]
    trained = [json.loads(line) for line in (run / "heldout" / "train.jsonl").read_text().splitlines()]
    sentences = [{r[c] for r in rows for c in ("sentence1", "sentence2")} for rows in (held, trained)]
    assert not sentences[0] & sentences[1]
    decision = json.loads((run / "gate" / "decision.json").read_text())
    assert decision["policy"]["name"] == "scored-pairs" and decision["passed"]
    row = next(r for r in decision["checks"] if r["check"] == "spearman_improves")
    assert row["status"] == "pass" and row["p_value"] < 0.05 and row["candidate"] > row["baseline"]
    candidate = json.loads((run / "eval" / "candidate.json").read_text())
    assert {(e["backend"], e["dim"]) for e in candidate["scored_pairs"]} == {
        (b, d) for b in ("onnx-fp32", "onnx-int8") for d in (32, 16)
    }  # every served dim, through the served graphs
    pipeline = json.loads((run / "pipeline.json").read_text())
    gate = next(s for s in pipeline["stages"] if s["name"] == "gate")
    assert "gating on Spearman" in gate["detail"]["evaluation"]
    assert (run / "heldout" / "data-gate" / "report.json").is_file()  # the leakage check ran on the split
    assert "spearman" in (run / "report.html").read_text()


def test_shuffled_scores_are_not_promoted(tmp_path, tiny_model_dir, capsys):
    rows = _lay_jargon_scored(200)
    scores = [s for _, _, s in rows]
    random.Random(0).shuffle(scores)
    shuffled = [(a, b, s) for (a, b, _), s in zip(rows, scores, strict=True)]
    code = main(["pipeline", str(_config(tmp_path, tiny_model_dir, shuffled, "shuffled"))])
    out = capsys.readouterr()
    assert code == 1, out.out + out.err
    assert "BLOCKED: quality gate failed" in out.err and "spearman_improves" in out.err
