"""Every contract survives a produce/consume round trip through the real broker."""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import Consumer, Producer

from fraudstream.contracts import decode, encode
from tests.factories import samples
from tests.integration.conftest import consume_n


def test_every_contract_round_trips_through_kafka(
    make_topic: Callable[..., str],
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
) -> None:
    topic = make_topic()
    producer = make_producer()
    messages = samples()
    for message in messages:
        producer.produce(topic, encode(message), key=type(message).__name__.encode())
    assert producer.flush(30) == 0

    received = consume_n(make_consumer(topic), len(messages))
    assert len(received) == len(messages)
    for original, record in zip(messages, received, strict=True):
        assert record.key() == type(original).__name__.encode()
        assert decode(type(original), record.value(), 64 * 1024) == original
