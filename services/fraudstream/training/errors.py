"""Errors raised while training or exporting a model."""

from __future__ import annotations

from fraudstream.errors import FraudStreamError


class TrainingError(FraudStreamError):
    """The training data or configuration cannot produce a model."""


class ExportError(TrainingError):
    """ONNX export failed or its output disagrees with the training library."""
