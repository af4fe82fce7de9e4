"""The project's exception hierarchy: every error we raise derives from FraudStreamError."""

from __future__ import annotations


class FraudStreamError(Exception):
    """Root of all fraudstream errors; the message says what to do about it."""


class ConfigurationError(FraudStreamError):
    """A setting is missing or inconsistent."""


class LocalStackError(FraudStreamError):
    """The embedded Kafka/Redis stack could not be prepared, started or stopped."""


class InfrastructureUnavailable(FraudStreamError):
    """Kafka or Redis cannot be reached."""


class ContractError(FraudStreamError):
    """A message does not satisfy its topic contract."""
