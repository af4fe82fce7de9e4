"""Factories for confluent-kafka clients with our common settings; no network until used.

A client's config is, in merge order: bootstrap and security (`CommonSettings`), our base
settings for its kind, the caller's `overrides`, and last the environment's
`FRAUD_KAFKA_CLIENT_OVERRIDES` (see `env_overrides`), an operator's escape hatch for
trying librdkafka settings without a release.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from typing import Any, Literal

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from fraudstream.errors import ConfigurationError
from fraudstream.settings import CommonSettings

_log = logging.getLogger("fraudstream.kafka")

OVERRIDES_ENV = "FRAUD_KAFKA_CLIENT_OVERRIDES"
Kind = Literal["producer", "consumer", "admin"]
_SECTIONS = ("all", "producer", "consumer", "admin")
_SECRET = re.compile(r"password|secret|\.key\b|jaas", re.IGNORECASE)


def env_overrides(kind: Kind, environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """librdkafka settings from `FRAUD_KAFKA_CLIENT_OVERRIDES`, merged last into every client
    of `kind` made here (so they beat our defaults and the caller's own settings).

    The value is a JSON object of sections `all`, `producer`, `consumer`, `admin`, each an
    object of librdkafka properties; `all` applies to every kind, the kind's own section
    after it. For example `{"all": {"reconnect.backoff.max.ms": 10000}, "consumer":
    {"session.timeout.ms": 45000}}` puts back librdkafka's defaults of those settings.
    Unset or empty means no overrides; anything else malformed is a `ConfigurationError`.
    """
    raw = environ.get(OVERRIDES_ENV, "").strip()
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{OVERRIDES_ENV} is not valid JSON ({exc}): {_EXAMPLE}") from exc
    if not isinstance(parsed, dict) or set(parsed) - set(_SECTIONS):
        raise ConfigurationError(f"{OVERRIDES_ENV} must be an object with sections among "
                                 f"{', '.join(_SECTIONS)}: {_EXAMPLE}")  # fmt: skip
    for section, values in parsed.items():
        if not isinstance(values, dict) or not all(
            isinstance(v, str | int | float | bool) for v in values.values()
        ):
            raise ConfigurationError(f"{OVERRIDES_ENV}: section {section!r} must map "
                                     f"librdkafka properties to scalars: {_EXAMPLE}")  # fmt: skip
    merged: dict[str, Any] = {**parsed.get("all", {}), **parsed.get(kind, {})}
    if merged:
        shown = {k: "***" if _SECRET.search(k) else v for k, v in merged.items()}
        _log.info("%s settings from %s: %s", kind, OVERRIDES_ENV, shown)
    return merged


_EXAMPLE = 'for example {"consumer": {"session.timeout.ms": 45000}}'


def admin_client(settings: CommonSettings, bootstrap: str) -> AdminClient:
    config: dict[str, Any] = {**settings.kafka_client_config(bootstrap), "logger": _log}
    config.update(env_overrides("admin"))
    return AdminClient(config)


# librdkafka bounds a network request by socket.timeout.ms (default 60 s), and with the
# broker gone send_offsets_to_transaction() ignores its own timeout (librdkafka#5456): given
# the scorer's 10 s it blocked until the broker was back (23-27 s, load_tests/
# send_offsets_hang.py) and, in 3 of 20 scorer broker restarts, the full 60 s, stalling the
# loop and its rebalance (decisions back after 27-29 s instead of 12-15 s). At 10 s, the
# scorer's own transaction timeout, it returned after 10.0 s every time. Produce requests
# that time out are retried (idempotence keeps them single and in order).
REQUEST_TIMEOUT = {"socket.timeout.ms": 10_000}


def producer(
    settings: CommonSettings, bootstrap: str, overrides: Mapping[str, Any] | None = None
) -> Producer:
    """An idempotent producer (no duplicates from internal retries), small linger for latency,
    requests bounded at 10 s (`REQUEST_TIMEOUT`)."""
    config: dict[str, Any] = {
        **settings.kafka_client_config(bootstrap),
        "enable.idempotence": True,
        "linger.ms": 5,
        "compression.type": "lz4",
        **REQUEST_TIMEOUT,
        "logger": _log,
    }
    config.update(overrides or {})
    config.update(env_overrides("producer"))
    return Producer(config)


def consumer(
    settings: CommonSettings,
    bootstrap: str,
    group_id: str,
    overrides: Mapping[str, Any] | None = None,
) -> Consumer:
    """A read_committed consumer: it never sees records of aborted transactions."""
    config: dict[str, Any] = {
        **settings.kafka_client_config(bootstrap),
        "group.id": group_id,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "logger": _log,
    }
    config.update(overrides or {})
    config.update(env_overrides("consumer"))
    return Consumer(config)


def partition_count(client: Consumer, topic: str, timeout_s: float = 30.0) -> int:
    """How many partitions `topic` has (0 when it does not exist)."""
    found = client.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if found is None or found.error is not None:
        return 0
    return len(found.partitions)


def commit_at_end(settings: CommonSettings, bootstrap: str, group_id: str, topic: str) -> None:
    """Commit `group_id`'s offsets on every partition of `topic` at its end, so a consumer
    of that group that starts now reads only what comes next (faust's group is its app
    id). Raises `ConfigurationError` when the topic does not exist."""
    client = consumer(settings, bootstrap, group_id)
    try:
        partitions = partition_count(client, topic)
        if partitions == 0:
            raise ConfigurationError(f"topic {topic} does not exist")
        ends = [
            TopicPartition(topic, p, client.get_watermark_offsets(TopicPartition(topic, p), 10)[1])
            for p in range(partitions)
        ]
        client.commit(offsets=ends, asynchronous=False)
    finally:
        client.close()
