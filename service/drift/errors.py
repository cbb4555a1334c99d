"""Errors raised by the drift monitor. Messages say what was expected, what arrived, and how to fix it."""

from __future__ import annotations

from service.errors import EmbedgateServiceError


class DriftError(EmbedgateServiceError):
    """Base class: a drift reference, window or request that cannot be used as asked."""


class DriftReferenceError(DriftError):
    """A version's drift reference is missing, damaged, or does not fit the embeddings it is compared with."""


class DriftInputError(DriftError):
    """Arrays, texts or options given to a drift function are unusable (wrong shape, too few rows)."""
