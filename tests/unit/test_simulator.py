"""The traffic simulator is seeded and produces valid, time-ordered payments."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import UTC, datetime
from typing import Any, cast

from fraudstream.contracts import Transaction, decode, encode
from fraudstream.simulator.population import legit_transactions, make_population
from fraudstream.simulator.stream import StreamStats, stream

START = datetime(2026, 11, 23, tzinfo=UTC)


def _take(seed: int, n: int) -> list[Transaction]:
    population = make_population(500, 50, seed)
    return list(itertools.islice(legit_transactions(population, START, 50.0, seed, "run"), n))


def test_same_seed_same_stream_different_seed_different_stream() -> None:
    assert _take(3, 200) == _take(3, 200)
    assert _take(3, 200) != _take(4, 200)


def test_events_are_valid_ordered_and_uniquely_identified() -> None:
    events = _take(5, 1000)
    times = [tx.event_time for tx in events]
    assert times == sorted(times)
    assert len({tx.transaction_id for tx in events}) == len(events)
    for tx in events:
        assert decode(Transaction, encode(tx), 64 * 1024) == tx
        assert tx.card_present == (tx.latitude is not None)


def test_rate_is_roughly_respected_over_a_day() -> None:
    population = make_population(500, 50, 1)
    stream = legit_transactions(population, START, 1.0, 1, "run")
    day = list(itertools.takewhile(lambda t: t.event_time.day == START.day, stream))
    # Thinning by the daily rhythm keeps a fraction of the base rate; nights are quieter.
    night = sum(tx.event_time.hour < 5 for tx in day)
    afternoon = sum(12 <= tx.event_time.hour < 17 for tx in day)
    assert 20_000 < len(day) < 86_400
    assert afternoon > 5 * night


class _TimedProducer:
    """Records when each record was produced; delivers nothing."""

    def __init__(self) -> None:
        self.at: list[float] = []

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: object) -> None:
        self.at.append(time.monotonic())

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0


def test_a_held_stream_sends_nothing_and_resumes_its_schedule_without_a_burst() -> None:
    events = _take(3, 20)
    producer, hold, stop = _TimedProducer(), threading.Event(), threading.Event()
    hold.set()
    feeder = threading.Thread(target=stream, args=(cast(Any, producer), "t", iter(events),
                              100.0, stop, StreamStats()), kwargs={"hold": hold})  # fmt: skip
    feeder.start()
    time.sleep(0.3)  # the hold's length, not a synchronisation
    assert producer.at == []
    released = time.monotonic()
    hold.clear()
    feeder.join(10)
    assert len(producer.at) == 20
    assert producer.at[-1] - released >= 19 / 100.0 - 0.005  # on the 100/s schedule again
