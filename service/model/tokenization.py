"""Tokenise texts for an exported graph with `tokenizers` alone (no transformers), exactly as the model did.

The exported tokenizer.json carries the model's normaliser (lowercasing included), its special tokens, and
truncation at max_seq_length counted in tokens *with* [CLS]/[SEP], which is what sentence-transformers does.
Two tokenizer objects are kept, one truncating and one not, and never reconfigured after loading: a
`tokenizers.Tokenizer` holds truncation as mutable state, and the service calls us from several threads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.errors import EmbedRequestError, ModelLoadError, TextTooLongError

if TYPE_CHECKING:
    import numpy as np

TOKENIZER_FILE = "tokenizer.json"


@dataclass(frozen=True)
class TokenizedTexts:
    """Unpadded token ids per text, plus what truncation did to each."""

    ids: tuple[tuple[int, ...], ...]
    token_counts: tuple[int, ...]  # tokens before truncation, special tokens included
    truncated: tuple[bool, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ids": [list(ids) for ids in self.ids],
            "token_counts": list(self.token_counts),
            "truncated": list(self.truncated),
        }


@dataclass(frozen=True)
class TokenizedBatch:
    """Right-padded model inputs (int64 [texts, longest]) for a list of texts; arrays are read-only."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_counts: tuple[int, ...]
    truncated: tuple[bool, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_ids": self.input_ids.tolist(),
            "attention_mask": self.attention_mask.tolist(),
            "token_counts": list(self.token_counts),
            "truncated": list(self.truncated),
        }


class TextTokenizer:
    """The exported tokenizer, with a fixed `max_seq_length` and the model's pad token."""

    def __init__(self, tokenizer_file: Path, max_seq_length: int | None = None) -> None:
        from tokenizers import Tokenizer

        tokenizer_file = Path(tokenizer_file)
        if not tokenizer_file.is_file():
            raise ModelLoadError(
                f"{tokenizer_file}: tokenizer file not found; expected the tokenizer.json that "
                f"`embedgate export` writes to <export>/tokenizer/"
            )
        try:
            self._truncating = Tokenizer.from_file(str(tokenizer_file))
            self._counting = Tokenizer.from_file(str(tokenizer_file))
        except Exception as err:  # tokenizers raises a bare Exception for unparseable files
            raise ModelLoadError(f"{tokenizer_file}: not a loadable tokenizers file: {err}") from err
        if max_seq_length is None:
            # `embedgate export` writes truncation at the model's max_seq_length into tokenizer.json.
            max_seq_length = (self._truncating.truncation or {}).get("max_length")
        if isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int) or max_seq_length < 2:
            raise ModelLoadError(
                f"{tokenizer_file}: max_seq_length must be an integer >= 2, got "
                f"{max_seq_length!r}; pass max_seq_length (the model's, e.g. 256)"
            )
        self.max_seq_length = max_seq_length
        self.pad_token_id = _pad_token_id(tokenizer_file.parent, self._truncating)
        for tokenizer in (self._truncating, self._counting):
            tokenizer.no_padding()  # we pad per batch, after sorting by length
        self._truncating.enable_truncation(max_length=max_seq_length)
        self._counting.no_truncation()

    def encode(self, texts: Sequence[str], truncate: bool = True) -> TokenizedTexts:
        """Token ids per text. With truncate=False a text over max_seq_length raises TextTooLongError."""
        texts = check_texts(texts)
        encodings = self._truncating.encode_batch(texts)
        # `overflowing` is non-empty exactly when truncation cut the text; only those are re-counted in full.
        truncated = tuple(bool(encoding.overflowing) for encoding in encodings)
        counts = tuple(
            len(self._counting.encode(text).ids) if cut else len(encoding.ids)
            for text, encoding, cut in zip(texts, encodings, truncated, strict=True)
        )
        if not truncate and any(truncated):
            too_long = [(index, counts[index]) for index, cut in enumerate(truncated) if cut]
            listed = ", ".join(f"text {index} has {count} tokens" for index, count in too_long[:5])
            more = f" (and {len(too_long) - 5} more)" if len(too_long) > 5 else ""
            raise TextTooLongError(
                f"{listed}{more}; the model takes at most {self.max_seq_length} tokens "
                f"(special tokens included) and truncation is off: shorten the text or "
                f"set truncate=true"
            )
        return TokenizedTexts(
            ids=tuple(tuple(encoding.ids) for encoding in encodings), token_counts=counts, truncated=truncated
        )

    def count_tokens(self, texts: Sequence[str]) -> tuple[int, ...]:
        """Tokens per text without truncation, special tokens included (compare with max_seq_length)."""
        return tuple(len(encoding.ids) for encoding in self._counting.encode_batch(check_texts(texts)))

    def pad(self, ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Right-pad to the longest sequence: (input_ids, attention_mask), int64 [len(ids), longest]."""
        import numpy as np

        longest = max((len(row) for row in ids), default=0)
        input_ids = np.full((len(ids), longest), self.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(ids), longest), dtype=np.int64)
        for row, token_ids in enumerate(ids):
            input_ids[row, : len(token_ids)] = token_ids
            attention_mask[row, : len(token_ids)] = 1
        return input_ids, attention_mask

    def tokenize(self, texts: Sequence[str], truncate: bool = True) -> TokenizedBatch:
        encoded = self.encode(texts, truncate=truncate)
        input_ids, attention_mask = self.pad(encoded.ids)
        input_ids.flags.writeable = False
        attention_mask.flags.writeable = False
        return TokenizedBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_counts=encoded.token_counts,
            truncated=encoded.truncated,
        )


def check_texts(texts: Sequence[str]) -> list[str]:
    """A list of strings, or EmbedRequestError naming the first element that is not one."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise EmbedRequestError(
            f"texts: expected a list of strings, got {type(texts).__name__} "
            f"{texts!r:.80}; wrap a single text in a list"
        )
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise EmbedRequestError(
                f"texts[{index}]: expected a string, got {type(text).__name__} {text!r:.80}"
            )
    return list(texts)


def _pad_token_id(folder: Path, tokenizer: Any) -> int:
    """The pad token named in tokenizer_config.json; 0 if none is named (padding is masked out either way)."""
    config_file = folder / "tokenizer_config.json"
    pad_token = None
    if config_file.is_file():
        pad_token = json.loads(config_file.read_text(encoding="utf-8")).get("pad_token")
    if isinstance(pad_token, dict):
        pad_token = pad_token.get("content")
    token_id = tokenizer.token_to_id(pad_token) if isinstance(pad_token, str) else None
    return token_id if token_id is not None else 0
