"""Errors raised by `gates`. Messages say what was expected, what arrived, and how to fix it."""

from __future__ import annotations


class EmbedgateGateError(ValueError):
    """Base class: a user-facing problem (bad input, missing artifact), not a bug."""


class MissingMetricError(EmbedgateGateError):
    """A gate check names a metric that the evaluation did not produce."""


class RunDirectoryError(EmbedgateGateError):
    """A run directory is missing, incomplete, or would be overwritten."""
