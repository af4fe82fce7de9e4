"""Stream simulated transactions to Kafka at a fixed rate (open loop)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import KafkaError, Message, Producer

from fraudstream.contracts import Transaction, encode


@dataclass
class StreamStats:
    """Counters shared with whoever displays progress."""

    sent: int = 0
    sent_at: dict[str, float] | None = None  # transaction id -> wall-clock send time, if kept
    labels: int = 0  # labels sent alongside (the demo's)
    delivered: int = 0
    failed: int = 0
    last_error: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        with self.lock:
            if err is None:
                self.delivered += 1
            else:
                self.failed += 1
                self.last_error = str(err)


def stream(  # noqa: PLR0917 - one call site, all arguments distinct in type
    producer: Producer,
    topic: str,
    transactions: Iterator[Transaction],
    rate_per_s: float,
    stop: threading.Event,
    stats: StreamStats,
    max_events: int | None = None,
    restamp: bool = True,
    hold: threading.Event | None = None,
) -> StreamStats:
    """Send event i at `start + i / rate` (no coordinated omission).

    With `restamp` each event's time becomes its send time (live traffic); without it the
    simulated event times are kept (an accelerated replay of simulated history). While
    `hold` is set nothing is sent, and the schedule resumes where it stopped (no burst to
    catch up). Runs until `stop` is set or `max_events` were sent, then flushes.
    """
    start = time.monotonic()
    for index, tx in enumerate(transactions):
        if stop.is_set() or (max_events is not None and index >= max_events):
            break
        if hold is not None and hold.is_set():
            held = time.monotonic()
            producer.flush(30)
            while hold.is_set() and not stop.wait(0.1):
                pass
            start += time.monotonic() - held
        delay = start + index / rate_per_s - time.monotonic()
        if delay > 0 and stop.wait(delay):
            break
        live = tx.model_copy(update={"event_time": datetime.now(UTC)}) if restamp else tx
        if stats.sent_at is not None:
            stats.sent_at[tx.transaction_id] = time.time()
        _produce(producer, topic, live.card_token.encode(), encode(live), stats)
        stats.sent += 1
        producer.poll(0)  # serve delivery callbacks so the counters stay current
    producer.flush(30)
    return stats


def _produce(producer: Producer, topic: str, key: bytes, value: bytes, stats: StreamStats) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=stats.on_delivery)
            return
        except BufferError:  # local queue full: let deliveries drain
            producer.poll(0.05)
