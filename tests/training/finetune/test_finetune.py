from __future__ import annotations

import json

import pytest
from transformers import TrainerCallback

from training.config import load_config
from training.errors import ConfigError
from training.finetune.train import train
from training.finetune.train_log import read_log


def _config(tmp_path, model_dir, data, **extra):
    base = {
        "base_model": str(model_dir),
        "data.path": str(data),
        "output_dir": str(tmp_path / "runs"),
        "batch_size": 16,
        "learning_rate": 5e-4,
        "logging_steps": 1,
        "seed": 7,
    }
    return load_config(None, {**base, **extra})


def _weights(run_dir):
    from safetensors.numpy import load_file

    return load_file(str(run_dir / "model" / "model.safetensors"))


class _Crash(TrainerCallback):
    def __init__(self, at_step):
        self.at_step = at_step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            raise KeyboardInterrupt("simulated interruption")


def test_run_directory_layout_and_dev_evaluation(tmp_path, tiny_model_dir, tiny_ir_dir, monkeypatch):
    from training.finetune.dev_eval import MatryoshkaRetrievalEvaluator

    found = []  # the kept step's encodings, reused for the rotation and the final dev metrics
    original = MatryoshkaRetrievalEvaluator.encodings_of
    monkeypatch.setattr(
        MatryoshkaRetrievalEvaluator,
        "encodings_of",
        lambda self, model, **k: found.append(original(self, model, **k)) or found[-1],
    )
    cfg = _config(
        tmp_path,
        tiny_model_dir,
        tiny_ir_dir,
        epochs=2,
        dev_fraction=0.2,
        **{"mining.strategy": "curriculum", "mining.num_negatives": 1},
    )
    result = train(cfg, progress=False)
    run = result.run_dir
    for rel in (
        "config.yaml",
        "model/model.safetensors",
        "model/README.md",
        "train/train_log.jsonl",
        "train/loss_curve.png",
        "train/summary.json",
        "train/defaults.json",
        "mined/hard_negatives.jsonl",
    ):
        assert (run / rel).is_file(), rel
    log = read_log(run / "train" / "train_log.jsonl")
    assert any("loss" in r for r in log) and any("eval_dev_ndcg@10_mean" in r for r in log)
    assert result.best_checkpoint is not None and result.best_metric is not None
    assert 0.0 <= result.dev_metrics["dev_ndcg@10_mean"] <= 1.0
    assert len(found) == 1 and found[0], (
        "the kept model's dev encodings were not found: the corpus was encoded again"
    )
    best = max(r["eval_dev_ndcg@10_mean"] for r in log if "eval_dev_ndcg@10_mean" in r)
    if not result.rotation["applied"]:  # then the final dev metrics are the kept step's own
        assert result.dev_metrics["dev_ndcg@10_mean"] == pytest.approx(
            best, abs=1e-5
        ) or "last checkpoint" in (result.checkpoint_choice or "")
    assert result.mining["strategy"] == "curriculum"
    recorded = load_config(run / "config.yaml")  # the resolved config: no nulls left for data-driven fields
    assert recorded.epochs == 2 and recorded.batch_size == 16 and recorded.matryoshka_dims == [32]


def test_a_quiet_run_prints_no_progress_bar_and_a_loud_one_does(tmp_path, tiny_model_dir, pairs_csv, capfd):
    """The pipeline trains with progress=False and reports stages itself: no tqdm bar may leak into its log (the
    model card's "Computing widget examples" did). With progress=True the bars are the user's to see."""
    train(_config(tmp_path, tiny_model_dir, pairs_csv, run_id="quiet"), progress=False)
    quiet = capfd.readouterr()
    assert "Computing widget examples" not in quiet.err + quiet.out
    train(_config(tmp_path, tiny_model_dir, pairs_csv, run_id="loud"), progress=True)
    loud = capfd.readouterr()
    assert "Computing widget examples" in loud.err + loud.out


def test_runs_are_immutable(tmp_path, tiny_model_dir, pairs_csv):
    cfg = _config(tmp_path, tiny_model_dir, pairs_csv, run_id="fixed", max_steps=2, dev_fraction=0.0)
    train(cfg, progress=False)
    with pytest.raises(ConfigError, match=r"runs/fixed already exists and runs are immutable"):
        train(cfg, progress=False)


def test_same_seed_same_weights(tmp_path, tiny_model_dir, pairs_csv):
    a = train(
        _config(tmp_path, tiny_model_dir, pairs_csv, run_id="a", max_steps=6, dev_fraction=0.0),
        progress=False,
    )
    b = train(
        _config(tmp_path, tiny_model_dir, pairs_csv, run_id="b", max_steps=6, dev_fraction=0.0),
        progress=False,
    )
    wa, wb = _weights(a.run_dir), _weights(b.run_dir)
    assert list(wa), "nothing to check: wa is empty"
    assert all((wa[k] == wb[k]).all() for k in wa)


def test_gradient_checkpointing_trains_the_same_weights(tmp_path, tiny_model_dir, pairs_csv, monkeypatch):
    """Recomputing activations in the backward pass (less memory) changes no gradient: dropout's random state is
    replayed, so the weights match a run that kept every activation."""
    import numpy as np
    from transformers import Trainer

    enabled = []
    original = Trainer.train
    monkeypatch.setattr(
        Trainer,
        "train",
        lambda self, *a, **k: enabled.append(self.args.gradient_checkpointing) or original(self, *a, **k),
    )
    common = {"max_steps": 4, "dev_fraction": 0.0}
    plain = train(_config(tmp_path, tiny_model_dir, pairs_csv, run_id="plain", **common), progress=False)
    saved = train(
        _config(tmp_path, tiny_model_dir, pairs_csv, run_id="ckpt", **common),
        progress=False,
        gradient_checkpointing=True,
    )
    assert enabled == [False, True]
    wa, wb = _weights(plain.run_dir), _weights(saved.run_dir)
    assert list(wa), "nothing to check: no weights saved"
    assert all(np.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    assert any(not np.allclose(wa[k], _base_weight(tiny_model_dir, k)) for k in wa)  # training moved them


def _base_weight(model_dir, key):
    from safetensors.numpy import load_file

    return load_file(str(next(model_dir.rglob("model.safetensors"))))[key]


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, tiny_model_dir, pairs_csv):
    import numpy as np

    common = {"max_steps": 12, "eval_steps": 3, "dev_fraction": 0.0, "mining.strategy": "none"}
    full = train(_config(tmp_path, tiny_model_dir, pairs_csv, run_id="full", **common), progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(
            _config(tmp_path, tiny_model_dir, pairs_csv, run_id="cut", **common),
            progress=False,
            callbacks=[_Crash(at_step=7)],
        )
    cut = tmp_path / "runs" / "cut"
    assert not (cut / "model").exists()  # no half-finished model
    resumed = train(resume=cut, progress=False)
    assert resumed.steps == 12
    steps = [r["step"] for r in read_log(cut / "train" / "train_log.jsonl") if "loss" in r]
    assert steps == sorted(set(steps)), "resume must not duplicate log lines"
    wf, wr = _weights(full.run_dir), _weights(cut)
    assert list(wf), "nothing to check: wf is empty"
    assert all(np.allclose(wf[k], wr[k], atol=1e-5) for k in wf)


def test_resume_with_mined_negatives_reuses_the_saved_set(tmp_path, tiny_model_dir, pairs_csv):
    """Resume never re-mines: the interrupted run's mined file is what the resumed run trains on.

    Not bit-identical to an uninterrupted run here: sentence-transformers' no-duplicates sampler defers rows whose
    texts repeat in a batch, so with mined negatives on this tiny, repetitive set an epoch can hold a different
    number of batches than the Trainer's resume arithmetic assumes (measured: steps up to the epoch boundary
    match exactly, the next epoch's order differs)."""
    common = {"max_steps": 12, "eval_steps": 3, "dev_fraction": 0.0, "mining.strategy": "model"}
    with pytest.raises(KeyboardInterrupt):
        train(
            _config(tmp_path, tiny_model_dir, pairs_csv, run_id="cutm", **common),
            progress=False,
            callbacks=[_Crash(at_step=7)],
        )
    cut = tmp_path / "runs" / "cutm"
    mined = (cut / "mined" / "hard_negatives.jsonl").read_bytes()
    resumed = train(resume=cut, progress=False)
    assert resumed.steps == 12 and resumed.mining["strategy"] == "model"
    assert (cut / "mined" / "hard_negatives.jsonl").read_bytes() == mined


def test_resume_errors(tmp_path, tiny_model_dir, pairs_csv):
    with pytest.raises(ConfigError, match="is not an embedgate run directory"):
        train(resume=tmp_path)
    cfg = _config(tmp_path, tiny_model_dir, pairs_csv, run_id="nock", max_steps=1, dev_fraction=0.0)
    result = train(cfg, progress=False)
    import shutil

    shutil.rmtree(result.run_dir / "train" / "checkpoints")
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(resume=result.run_dir)


def test_nli_trains_on_contradiction_triplets(tmp_path, tiny_model_dir):
    rows = []
    for i in range(40):
        rows += [
            {"premise": f"the patient {i} has heart pain", "hypothesis": f"heart pain {i}", "label": 0},
            {"premise": f"the patient {i} has heart pain", "hypothesis": f"kidney dose {i}", "label": 1},
            {"premise": f"the patient {i} has heart pain", "hypothesis": f"no pain at all {i}", "label": 2},
        ]
    data = tmp_path / "nli.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = train(_config(tmp_path, tiny_model_dir, data, max_steps=3, dev_fraction=0.0), progress=False)
    assert result.loss == "mnrl" and result.train_rows == 40
    assert any("NLI -> 40 (premise, entailment, contradiction) triplets" in n for n in result.notes)


def test_unknown_base_model_is_a_clear_error(tmp_path, pairs_csv):
    cfg = load_config(
        None,
        {"base_model": "org/not-here", "data.path": str(pairs_csv), "output_dir": str(tmp_path / "runs")},
    )
    with pytest.raises(
        ConfigError, match=r"'org/not-here': not a local folder and not in the Hugging Face cache"
    ):
        train(cfg, progress=False)
