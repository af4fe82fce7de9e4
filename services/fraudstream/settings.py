"""Settings shared by every fraudstream process, read from the environment in one place.

`KAFKA_BOOTSTRAP_SERVERS` and `REDIS_URL` keep their conventional names; everything else
is prefixed `FRAUD_` (for example `FRAUD_TOPIC_TRANSACTIONS`). Services extend
`CommonSettings` with their own fields.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

MASK = "***"
_PASSWORD_PARAM = re.compile(r"(?i)([?&]password=)[^&#]*")


def mask_url(url: str) -> str:
    """`url` fit to print: a password in its userinfo or `password=` query becomes `***`.

    `redis://:secret@host:6379/0` gives `redis://:***@host:6379/0`. When the parser cannot
    place an `@` (an unescaped `/` in the password, say), all before the last `@` is masked.
    Strings that are not URLs come back unchanged.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    try:
        authority = urlsplit(url).netloc
    except ValueError:  # for example an unclosed IPv6 bracket
        authority = ""
    if "@" in authority:
        userinfo, _, host = authority.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        masked = f"{user}:{MASK}@{host}" if colon else authority
        rest = masked + rest[len(authority) :]
    elif "@" in rest:
        rest = f"{MASK}@{rest.rpartition('@')[2]}"
    return f"{scheme}://{_PASSWORD_PARAM.sub(_masked_param, rest)}"


def _masked_param(match: re.Match[str]) -> str:
    return match.group(1) + MASK


class CommonSettings(BaseSettings):
    """Infrastructure endpoints, topic names and local-stack locations."""

    model_config = SettingsConfigDict(
        env_prefix="FRAUD_", frozen=True, extra="ignore", populate_by_name=True
    )

    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "FRAUD_KAFKA_BOOTSTRAP_SERVERS"),
        description="Use this Kafka instead of the embedded broker started by `fraudctl up`.",
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "FRAUD_REDIS_URL"),
        description="Use this Redis instead of the embedded redis-server.",
    )
    redis_cluster: bool = Field(
        default=False,
        description="REDIS_URL names a node of a Redis Cluster (state runs a script per "
        "primary; see the README's State section).",
    )
    redis_prefix: str = Field(
        default="fraud", pattern=r"^[A-Za-z0-9_.-]{1,32}$", description="Namespace of our keys."
    )
    kafka_security_protocol: str = Field(
        default="PLAINTEXT", description="librdkafka security.protocol for external clusters."
    )
    kafka_sasl_mechanism: str | None = Field(default=None, description="For example SCRAM-SHA-512.")
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None

    state_dir: Path = Field(
        default=Path(".fraudstream"),
        description="Embedded stack's data, logs and pid files (git-ignored).",
    )
    cache_dir: Path = Field(
        default=Path(".cache"), description="Downloaded Kafka jars (git-ignored)."
    )
    kafka_version: str = Field(default="4.1.1", description="Apache Kafka version of the broker.")
    kafka_heap: str = Field(default="1g", description="Maximum JVM heap of the embedded broker.")
    startup_timeout_s: float = Field(default=90.0, gt=0, description="Wait for readiness.")

    topic_transactions: str = "transactions"
    topic_dlq: str = "transactions.dlq"
    topic_decisions: str = "fraud.decisions"
    topic_review: str = "fraud.review"
    topic_labels: str = "fraud.labels"
    topic_retrain: str = "fraud.retrain"
    topic_models: str = "fraud.models"
    topic_rules: str = "fraud.rules"
    topic_partitions: int = Field(
        default=6, ge=1, le=1024, description="Partitions of the keyed, high-volume topics."
    )

    topic_replication_factor: int = Field(
        default=1, ge=1, le=16, description="Replicas of each topic (3 on a real cluster)."
    )

    max_message_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=8 * 1024 * 1024,
        description="Larger input records are dead-lettered as oversize.",
    )

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """Fields for repr and str, with any password in a URL masked (`mask_url`)."""
        for name, value in super().__repr_args__():
            yield name, mask_url(value) if isinstance(value, str) else value

    def kafka_client_config(self, bootstrap: str) -> dict[str, Any]:
        """librdkafka settings common to every client: bootstrap and security."""
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
            config["sasl.username"] = self.kafka_sasl_username or ""
            password = self.kafka_sasl_password
            config["sasl.password"] = password.get_secret_value() if password else ""
        return config


@lru_cache(maxsize=1)
def get_settings() -> CommonSettings:
    """The process-wide settings, read once from the environment."""
    return CommonSettings()
