"""Intake: `fraud.review` into the case store, at least once and idempotent per
transaction id, so a restart or rebalance that reads cases again adds nothing twice.

Offsets are committed after the cases' database commit. A record that fails the contract
is kept in `rejected_records` with its reason and bytes (card numbers masked), and
counted."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from fraudstream.contracts import Rejection, ReviewCase, decode
from fraudstream.contracts.dead_letters import mask_pan_bytes
from fraudstream.review.metrics import ReviewMetrics
from fraudstream.review.store import CaseStore

_log = logging.getLogger(__name__)
MAX_KEPT_BYTES = 64 * 1024
OFFSETS_BY_HAND = {"enable.auto.offset.store": False}


class Intake:
    """Polls `fraud.review` and stores what it reads; `poll_once` is one batch. The
    consumer must have `enable.auto.offset.store` false (`OFFSETS_BY_HAND`)."""

    def __init__(
        self,
        store: CaseStore,
        consumer: Consumer,
        topic: str,
        metrics: ReviewMetrics,
        max_bytes: int,
    ) -> None:
        self.store = store
        self.consumer = consumer
        self.topic = topic
        self.metrics = metrics
        self.max_bytes = max_bytes
        consumer.subscribe([topic])

    def poll_once(self, timeout_s: float = 0.5) -> int:
        """Read up to 500 records, store them, commit; returns how many were new cases."""
        messages = self.consumer.consume(500, timeout=timeout_s)
        records = [m for m in messages if _usable(m)]
        if not records:
            return 0
        try:
            added = self.store_batch(records, datetime.now(UTC))
        except Exception:
            # Not stored: read the batch again next time (the consumer's position has
            # moved past it, and the next commit would skip it).
            firsts: dict[int, int] = {}
            for msg in records:
                firsts.setdefault(msg.partition() or 0, msg.offset() or 0)
            for partition, offset in firsts.items():
                self.consumer.seek(TopicPartition(self.topic, partition, offset))
            raise
        # Offsets are stored by hand (the consumer has enable.auto.offset.store off): only
        # what is in the database is committed, even after a seek back.
        ends: dict[int, int] = {}
        for msg in records:
            ends[msg.partition() or 0] = (msg.offset() or 0) + 1
        self.consumer.store_offsets(
            offsets=[TopicPartition(self.topic, p, end) for p, end in ends.items()]
        )
        self.consumer.commit(asynchronous=False)
        return added

    def store_batch(self, records: Sequence[Message], now: datetime) -> int:
        cases: list[ReviewCase] = []
        rejected = []
        for msg in records:
            found = decode(ReviewCase, msg.value(), self.max_bytes)
            if isinstance(found, Rejection):
                self.metrics.invalid.labels(found.reason.value).inc()
                _log.warning(
                    "fraud.review record at %s[%d]@%d rejected: %s: %s",
                    msg.topic(),
                    msg.partition(),
                    msg.offset(),
                    found.reason.value,
                    found.detail,
                )
                rejected.append(
                    {
                        "topic": msg.topic() or self.topic,
                        "partition": msg.partition() or 0,
                        "offset": msg.offset() or 0,
                        "reason": found.reason.value,
                        "detail": found.detail[:2000],
                        "raw": mask_pan_bytes((msg.value() or b"")[:MAX_KEPT_BYTES]),
                        "at": now,
                    }
                )
            else:
                cases.append(found)
        self.store.reject(rejected)
        added = self.store.ingest(cases, now)
        self.metrics.ingested.inc(added)
        self.metrics.duplicates.inc(len(cases) - added)
        return added

    def close(self) -> None:
        self.consumer.close()


def _usable(msg: Message) -> bool:
    error = msg.error()
    if error is None:
        return True
    if error.code() != KafkaError._PARTITION_EOF:
        _log.warning("fraud.review consumer: %s", error)
    return False
