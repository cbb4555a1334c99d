"""The dev-best checkpoint becomes the model only when it beats the last one beyond the dev set's noise."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np

from training.finetune.checkpoint_choice import choose_checkpoint

CONFIG = SimpleNamespace(seed=0, max_seq_length=None)


def _trainer(checkpoints, best_step):
    return SimpleNamespace(
        state=SimpleNamespace(best_model_checkpoint=str(checkpoints / f"checkpoint-{best_step}"))
    )


def _history(best_lead: np.ndarray) -> SimpleNamespace:
    rng = np.random.default_rng(0)
    last = rng.uniform(0.3, 0.7, len(best_lead))
    return SimpleNamespace(per_query_history={4: last - 0.05, 8: last + best_lead, 12: last})


def test_a_clear_lead_keeps_the_best_checkpoint(tmp_path):
    model = SimpleNamespace(device="cpu")
    evaluator = _history(np.full(40, 0.04) + np.random.default_rng(1).normal(0, 0.01, 40))
    kept, why = choose_checkpoint(_trainer(tmp_path, 8), evaluator, model, CONFIG)
    assert kept is model and why.startswith("best dev checkpoint (step 8) kept: +0.04")


def test_a_lead_within_noise_loads_the_last_checkpoint_with_the_runs_prompts(tmp_path, tiny_model_dir):
    shutil.copytree(tiny_model_dir, tmp_path / "checkpoint-12")
    model = SimpleNamespace(device="cpu", prompts={"query": "query: ", "document": "passage: "})
    lead = np.random.default_rng(2).normal(0, 0.2, 30)
    evaluator = _history(lead - lead.mean() + 0.01)  # +0.01 on average, +-0.2 per query: noise
    kept, why = choose_checkpoint(_trainer(tmp_path, 8), evaluator, model, CONFIG)
    assert kept is not model and kept.encode(["a text"]).shape == (1, 32)
    assert (
        kept.prompts["query"] == "query: " and kept.prompts["document"] == "passage: "
    )  # what the run trained with
    assert why.startswith("last checkpoint (step 12) kept: the best dev checkpoint (step 8) led by +0.0100")
    assert "within the dev set's noise" in why


def test_nothing_to_choose(tmp_path):
    model = SimpleNamespace(device="cpu")
    assert choose_checkpoint(_trainer(tmp_path, 12), _history(np.zeros(5)), model, CONFIG)[1] == (
        "checkpoint at step 12: the best dev evaluation is the last one"
    )
    assert choose_checkpoint(_trainer(tmp_path, 8), SimpleNamespace(), model, CONFIG) == (model, None)
