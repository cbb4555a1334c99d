"""Errors raised by `training`. Each message says what was expected, what arrived, and how to fix it."""

from __future__ import annotations


class EmbedgateTrainingError(ValueError):
    """Base class: a user-facing problem with inputs to training (not a bug)."""


class DataFormatError(EmbedgateTrainingError):
    """A dataset file is missing, cannot be parsed, or its columns cannot be mapped to a dataset type."""


class ConfigError(EmbedgateTrainingError):
    """A training or export configuration value is invalid."""


class ExportError(EmbedgateTrainingError):
    """A model cannot be exported faithfully to ONNX (unsupported modules, or the graph fails its parity check)."""
