"""Errors raised by the model registry."""

from __future__ import annotations

from fraudstream.errors import FraudStreamError


class RegistryError(FraudStreamError):
    """A registry operation is not possible; the message says what to do instead."""
