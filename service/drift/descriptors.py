"""Text descriptors: a few numbers per input that show *what kind* of text arrives, without keeping the text.

    describe_text("¿Dónde está 42?", token_count=9, truncated=False)
    -> {"tokens": 9, "truncated": 0, "emptyish": 0, "ascii_letter_share": 0.7, "non_latin_share": 0.0, ...}

Why these: token count and truncation show inputs getting longer than the model reads; the ASCII-letter and
non-Latin-script shares show a language or charset change (the model was tuned on one); digit and punctuation
ratios show codes, tables or markup arriving instead of prose; `emptyish` catches inputs with no letter or digit at
all (whitespace, emoji, separators), which embed to a near-constant vector. Shares are over non-space characters,
so padding does not dilute them. Pure Python: computed on the capture's writer thread, never on the request path.
"""

from __future__ import annotations

from collections.abc import Sequence

DESCRIPTOR_NAMES = (
    "tokens",
    "truncated",
    "emptyish",
    "ascii_letter_share",
    "non_latin_share",
    "digit_ratio",
    "punct_ratio",
)
# 0/1 columns: Evidently tests them as categories (Z-test), not as continuous values (K-S).
BINARY_DESCRIPTORS = ("truncated", "emptyish")


def describe_text(text: str, token_count: int, truncated: bool) -> dict[str, float]:
    """The descriptors of one input; `token_count` is before truncation, special tokens included."""
    visible = [char for char in text if not char.isspace()]
    letters = [char for char in visible if char.isalpha()]
    n_visible = max(len(visible), 1)
    return {
        "tokens": float(token_count),
        "truncated": float(bool(truncated)),
        "emptyish": float(not any(char.isalnum() for char in visible)),
        "ascii_letter_share": sum(1 for char in letters if char.isascii()) / n_visible,
        "non_latin_share": sum(1 for char in letters if not _is_latin(char)) / max(len(letters), 1),
        "digit_ratio": sum(1 for char in visible if char.isdigit()) / n_visible,
        "punct_ratio": sum(1 for char in visible if not char.isalnum()) / n_visible,
    }


def describe_texts(
    texts: Sequence[str], token_counts: Sequence[int], truncated: Sequence[bool]
) -> list[dict[str, float]]:
    """Descriptors for each text; the three sequences must have the same length."""
    if not len(texts) == len(token_counts) == len(truncated):
        raise ValueError(
            f"texts, token_counts and truncated must have one entry per text; got lengths "
            f"{len(texts)}, {len(token_counts)}, {len(truncated)}"
        )
    return [
        describe_text(text, count, cut)
        for text, count, cut in zip(texts, token_counts, truncated, strict=True)
    ]


def _is_latin(letter: str) -> bool:
    # Basic Latin, Latin-1 Supplement, Latin Extended-A/B, IPA (..U+02AF) and Latin Extended Additional: the
    # scripts of English and the other Latin-alphabet languages. Code-point ranges, not unicodedata.name(),
    # because this runs for every captured character.
    code = ord(letter)
    return code <= 0x02AF or 0x1E00 <= code <= 0x1EFF
