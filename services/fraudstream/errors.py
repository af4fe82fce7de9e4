"""The project's exception hierarchy: every error we raise derives from FraudStreamError."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


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


def invalid(what: str, exc: ValidationError, limit: int = 5) -> ConfigurationError:
    """A `ConfigurationError` for a document that failed validation: `what` (which file,
    which kind of document), then its first `limit` problems as `field.path: message`."""
    problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                         for e in exc.errors()[:limit])  # fmt: skip
    return ConfigurationError(f"{what}: {problems}")
