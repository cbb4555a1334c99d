"""Errors raised by `service`. Messages say what was expected, what arrived, and how to fix it."""

from __future__ import annotations


class EmbedgateServiceError(ValueError):
    """Base class: a user-facing problem with a model, the registry, or a request."""


class ModelLoadError(EmbedgateServiceError):
    """A model version cannot be loaded (missing file, manifest mismatch, not an ONNX graph)."""


class RegistryError(EmbedgateServiceError):
    """The registry is missing, corrupt, or an operation on it is not allowed."""
