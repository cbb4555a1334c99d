"""Errors raised by the data gate. Messages say what was expected, what arrived, and how to fix it."""

from __future__ import annotations

from gates.errors import EmbedgateGateError


class DataGateError(EmbedgateGateError):
    """Bad data-gate input: an unknown dataset object, an unusable tokenizer, a bad limit or output path."""
