"""Errors raised by `service`. Messages say what was expected, what arrived, and how to fix it."""

from __future__ import annotations


class EmbedgateServiceError(ValueError):
    """Base class: a user-facing problem with a model, the registry, or a request."""


class ModelLoadError(EmbedgateServiceError):
    """A model version cannot be loaded (missing file, manifest mismatch, not an ONNX graph)."""


class RegistryError(EmbedgateServiceError):
    """The registry is missing, corrupt, or an operation on it is not allowed."""


class EmbedRequestError(EmbedgateServiceError):
    """Texts or options that cannot be embedded as asked (not strings, `dimensions` not served): HTTP 422."""


class TextTooLongError(EmbedRequestError):
    """A text exceeds the model's max_seq_length while truncation is off: HTTP 422."""
