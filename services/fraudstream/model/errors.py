"""Errors raised while loading or running a model version."""

from __future__ import annotations

from fraudstream.errors import FraudStreamError


class ModelLoadError(FraudStreamError):
    """A model version directory cannot be loaded or fed the given input."""
