"""Factories for confluent-kafka clients with our common settings; no network until used."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from fraudstream.settings import CommonSettings

_log = logging.getLogger("fraudstream.kafka")


def admin_client(settings: CommonSettings, bootstrap: str) -> AdminClient:
    config: dict[str, Any] = {**settings.kafka_client_config(bootstrap), "logger": _log}
    return AdminClient(config)


def producer(
    settings: CommonSettings, bootstrap: str, overrides: Mapping[str, Any] | None = None
) -> Producer:
    """An idempotent producer (no duplicates from internal retries), small linger for latency."""
    config: dict[str, Any] = {
        **settings.kafka_client_config(bootstrap),
        "enable.idempotence": True,
        "linger.ms": 5,
        "compression.type": "lz4",
        "logger": _log,
    }
    config.update(overrides or {})
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
    return Consumer(config)


def partition_count(client: Consumer, topic: str, timeout_s: float = 30.0) -> int:
    """How many partitions `topic` has (0 when it does not exist)."""
    found = client.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if found is None or found.error is not None:
        return 0
    return len(found.partitions)
