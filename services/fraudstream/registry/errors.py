"""Errors raised by the model registry."""

from __future__ import annotations

from fraudstream.errors import FraudStreamError


class RegistryError(FraudStreamError):
    """A registry operation is not possible; the message says what to do instead."""


class ModelNotFoundError(RegistryError):
    """No version of the model is registered under this root (none trained yet, or wrong root)."""


class ChecksumError(RegistryError):
    """Files of a version are missing or differ from the SHA-256 recorded in its manifest."""

    def __init__(self, message: str, files: tuple[str, ...]) -> None:
        super().__init__(message)
        self.files = files
