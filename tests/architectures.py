"""Tiny models of the architectures people bring (built in seconds, no download): bge-style CLS pooling, mean
pooling with and without Normalize, weighted-mean and last-token pooling (decoder-style embedders), and a
DistilBERT encoder whose tokenizer has no token_type_ids."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import TINY_DIM, _write_vocab


def build_variant(tiny_model_dir: Path, target: Path, pooling: str, normalize: bool) -> Path:
    """The conftest's tiny BERT with another head."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    base = SentenceTransformer(str(tiny_model_dir), device="cpu")
    heads = [Pooling(TINY_DIM, pooling_mode=pooling), *([Normalize()] if normalize else [])]
    SentenceTransformer(modules=[base[0], *heads], device="cpu").save(str(target), safe_serialization=True)
    return target


def build_distilbert(target: Path, seed: int = 0) -> Path:
    """DistilBERT -> mean pooling -> Normalize; its tokenizer yields input_ids and attention_mask only."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import DistilBertConfig, DistilBertModel, DistilBertTokenizerFast

    torch.manual_seed(seed)
    hf_dir = target / "hf"
    hf_dir.mkdir(parents=True, exist_ok=True)
    _write_vocab(hf_dir / "vocab.txt")
    tokenizer = DistilBertTokenizerFast(vocab_file=str(hf_dir / "vocab.txt"), do_lower_case=True)
    config = DistilBertConfig(
        vocab_size=tokenizer.vocab_size,
        dim=TINY_DIM,
        n_layers=2,
        n_heads=4,
        hidden_dim=TINY_DIM * 2,
        max_position_embeddings=128,
    )
    DistilBertModel(config).save_pretrained(hf_dir, safe_serialization=True)
    tokenizer.save_pretrained(hf_dir)
    transformer = models.Transformer(str(hf_dir), max_seq_length=64)
    model = SentenceTransformer(
        modules=[transformer, models.Pooling(TINY_DIM, pooling_mode="mean"), models.Normalize()], device="cpu"
    )
    out = target / "model"
    model.save(str(out), safe_serialization=True)
    return out
