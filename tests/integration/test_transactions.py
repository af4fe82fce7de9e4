"""Guards the broker setup: Kafka transactions work and read_committed hides aborts."""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import Consumer, Producer

from tests.integration.conftest import consume_n


def _values_until(consumer: Consumer, last: bytes) -> list[bytes]:
    """Values in order until the record `last` is seen (it is committed after the rest)."""
    seen: list[bytes] = []
    while last not in seen:
        batch = consume_n(consumer, 1, timeout_s=30)
        assert batch, f"timed out waiting for {last!r}; saw {seen}"
        seen.append(batch[0].value() or b"")
    return seen


def test_committed_transaction_is_visible_and_aborted_one_is_not(
    make_topic: Callable[..., str],
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
) -> None:
    topic = make_topic()
    producer = make_producer({"transactional.id": f"txn-{topic}"})
    producer.init_transactions(30)

    producer.begin_transaction()
    producer.produce(topic, b"committed-1", key=b"k")
    producer.commit_transaction(30)

    producer.begin_transaction()
    producer.produce(topic, b"aborted", key=b"k")
    producer.flush(30)  # the aborted record is really written to the log
    producer.abort_transaction(30)

    producer.begin_transaction()
    producer.produce(topic, b"committed-2", key=b"k")
    producer.commit_transaction(30)

    committed = make_consumer(topic)  # read_committed by default
    assert _values_until(committed, b"committed-2") == [b"committed-1", b"committed-2"]

    uncommitted = make_consumer(topic, {"isolation.level": "read_uncommitted"})
    assert _values_until(uncommitted, b"committed-2") == [
        b"committed-1",
        b"aborted",
        b"committed-2",
    ]


def test_open_transaction_is_invisible_until_commit(
    make_topic: Callable[..., str],
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
) -> None:
    topic = make_topic()
    producer = make_producer({"transactional.id": f"txn-{topic}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"pending", key=b"k")
    producer.flush(30)

    reader = make_consumer(topic)
    # Absence cannot be awaited: a bounded wait shows nothing is readable while open.
    assert consume_n(reader, 1, timeout_s=3) == []
    producer.commit_transaction(30)
    assert [m.value() for m in consume_n(reader, 1)] == [b"pending"]
