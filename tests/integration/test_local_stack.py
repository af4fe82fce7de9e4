"""The embedded stack and the simulator against real processes."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import redis
from confluent_kafka import Consumer, Producer

from fraudstream.contracts import Transaction, decode
from fraudstream.localstack import kafka, processes, redis_server
from fraudstream.localstack.stack import LocalStack, kafka_ready
from fraudstream.settings import CommonSettings
from fraudstream.simulator.population import legit_transactions, make_population
from fraudstream.simulator.stream import StreamStats, stream
from tests.integration.conftest import consume_n


def test_redis_is_reachable(redis_client: redis.Redis) -> None:
    assert redis_client.ping()
    redis_client.set("fraudstream:test", "1", ex=10)
    assert redis_client.get("fraudstream:test") == b"1"


def test_up_is_idempotent_and_down_stops_everything(
    tmp_path: Path, stack_settings: CommonSettings
) -> None:
    settings = CommonSettings(state_dir=tmp_path / "state", cache_dir=stack_settings.cache_dir)
    stack = LocalStack(settings)
    lines: list[str] = []
    first = stack.up(say=lines.append)
    try:
        assert kafka_ready(first.kafka_bootstrap)
        assert redis_server.ping(first.redis_port)
        again = stack.up(say=lines.append)
        assert again == first
        assert any(line.startswith("already running") for line in lines)
    finally:
        assert stack.down(say=lines.append)
    assert not processes.is_running(first.kafka_pid, kafka.MAIN_CLASS)
    assert not processes.is_running(first.redis_pid, redis_server.MARKER)
    assert not processes.port_open(first.kafka_port)
    assert stack.status().state is None
    assert not stack.down(say=lines.append)  # a second down is harmless too


def test_simulated_stream_reaches_kafka_keyed_by_card(
    make_topic: Callable[..., str],
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
) -> None:
    topic = make_topic(partitions=3)
    events = legit_transactions(make_population(100, 20, 1), datetime.now(UTC), 500.0, 1, "it")
    stats = stream(make_producer(), topic, events, 2000.0, threading.Event(), StreamStats(),
                   max_events=300)  # fmt: skip
    assert (stats.sent, stats.delivered, stats.failed) == (300, 300, 0)

    records = consume_n(make_consumer(topic), 300)
    assert len(records) == 300
    partitions_by_card: dict[bytes, set[int]] = {}
    for record in records:
        tx = decode(Transaction, record.value(), 64 * 1024)
        assert isinstance(tx, Transaction)
        assert record.key() == tx.card_token.encode()
        partitions_by_card.setdefault(record.key() or b"", set()).add(record.partition() or 0)
    assert all(len(parts) == 1 for parts in partitions_by_card.values())  # per-card ordering
    assert set(itertools.chain.from_iterable(partitions_by_card.values())) == {0, 1, 2}
