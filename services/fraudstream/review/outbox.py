"""The label relay: outbox rows to `fraud.labels`, each exactly once.

A verdict commits its label to the outbox table (store.py); the relay produces pending
rows in a Kafka transaction, each record carrying its outbox id in a header, then marks
them sent. A crash can fall between the two:

- before the Kafka commit: on restart `init_transactions` aborts the open transaction and
  the rows, still pending, are produced again;
- after the Kafka commit, before the database marks them sent: on restart the relay reads
  `fraud.labels` (read_committed) from its recorded positions to the end, finds the outbox
  ids it already wrote, and marks those sent instead of producing them twice.

Positions are recorded per partition before anything is produced (at the topic's end on
the first start), so the read-back always covers whatever a crashed relay committed. Run
one relay per database: a second one with the same transactional id fences the first.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from sqlalchemy import select, update

from fraudstream.contracts import Label, encode
from fraudstream.review.database import ReviewStoreError
from fraudstream.review.schema import OutboxLabel, RelayPosition
from fraudstream.review.store import CaseStore
from fraudstream.scoring import faults

_log = logging.getLogger(__name__)
HEADER = "fraudstream.outbox_id"
BATCH = 500


@dataclass(frozen=True)
class Sent:
    outbox_id: int
    partition: int
    offset: int
    transaction_id: str  # the record's key: a row is marked only when it matches


class LabelRelay:
    """Produces the outbox to `topic`. Crash tests arm the fault points (`scoring.faults`)
    `relay_before_produce` (verdicts committed, nothing produced), `relay_before_commit`
    (produced, the Kafka transaction open) and `relay_after_commit` (on the topic, not
    yet marked sent in the database)."""

    def __init__(
        self,
        store: CaseStore,
        producer: Callable[[], Producer],
        consumer: Callable[[], Consumer],
        topic: str,
        *,
        timeout_s: float = 30.0,
    ) -> None:
        self.store = store
        self.new_producer = producer
        self.producer: Producer | None = None
        self.new_consumer = consumer
        self.topic = topic
        self.timeout_s = timeout_s
        self.started = False

    def start(self) -> int:
        """A fresh transactional producer (fencing older relays and aborting what they left
        open), positions recorded, the topic read back; returns how many outbox rows were
        on the topic already (a relay stopped after its Kafka commit). Also the way back
        after any failure: a producer in an unknown state is replaced, not reused."""
        self.started = False
        if self.producer is not None:
            self.producer.flush(0)
        self.producer = self.new_producer()
        self.producer.init_transactions(self.timeout_s)
        ends = self._ends()
        with self.store.sessions.begin() as db:
            known = {p.partition for p in db.scalars(select(RelayPosition))}
            for partition, (low, high) in ends.items():
                if partition not in known:  # first start: ours cannot be there yet
                    start = high if not known else low
                    db.add(RelayPosition(partition=partition, offset=start))
        found = self._read_back(ends)
        self.started = True
        if found:
            _log.info(
                "%d labels were on %s already (a relay stopped after its Kafka commit); "
                "marked sent, not produced again",
                len(found),
                self.topic,
            )
        return len(found)

    def relay_once(self) -> int:
        """Produce up to one batch of pending labels in one transaction; returns how many."""
        producer = self.producer
        if not self.started or producer is None:
            raise ReviewStoreError("LabelRelay.start() must run before relaying")
        with self.store.sessions() as db:
            rows = list(
                db.scalars(
                    select(OutboxLabel)
                    .where(OutboxLabel.sent_at.is_(None))
                    .order_by(OutboxLabel.id)
                    .limit(BATCH)
                )
            )
        if not rows:
            return 0
        sent: list[Sent] = []
        errors: list[KafkaError] = []

        def delivered(err: KafkaError | None, msg: Message, outbox_id: int, key: str) -> None:
            if err is not None:
                errors.append(err)
            else:
                sent.append(Sent(outbox_id, msg.partition() or 0, msg.offset() or 0, key))

        faults.point("relay_before_produce")
        producer.begin_transaction()
        try:
            for row in rows:
                value = encode(Label.model_validate(row.label, strict=False))
                producer.produce(
                    self.topic,
                    key=row.transaction_id.encode(),
                    value=value,
                    headers=[(HEADER, str(row.id).encode())],
                    on_delivery=functools.partial(
                        delivered, outbox_id=row.id, key=row.transaction_id
                    ),
                )
            producer.flush(self.timeout_s)
            faults.point("relay_before_commit")
            producer.commit_transaction(self.timeout_s)
        except Exception:
            # Whether the broker committed is not known for certain (a timed-out commit
            # may have landed): abort, and let the next step read the topic back first.
            self._abort()
            self.started = False
            raise
        producer.poll(0)
        # From here the labels are on the topic: if marking them fails, the next step
        # starts over (`start`: read the topic back) instead of producing them again.
        self.started = False
        if errors or len(sent) != len(rows):
            raise ReviewStoreError(
                f"labels committed but {len(errors)} delivery reports failed: {errors[:3]}"
            )
        faults.point("relay_after_commit")
        self._mark(sent)
        self.started = True
        return len(sent)

    def _abort(self) -> None:
        if self.producer is None:
            return
        try:
            self.producer.abort_transaction(self.timeout_s)
        except KafkaException as exc:
            _log.warning("abort of the label transaction failed: %s", exc)

    def _mark(self, sent: list[Sent]) -> None:
        now = datetime.now(UTC)
        with self.store.sessions.begin() as db:
            for item in sent:
                db.execute(
                    update(OutboxLabel)
                    .where(
                        OutboxLabel.id == item.outbox_id,
                        OutboxLabel.transaction_id == item.transaction_id,
                    )
                    .values(sent_at=now, partition=item.partition, offset=item.offset)
                )
            ends: dict[int, int] = {}
            for item in sent:
                ends[item.partition] = max(ends.get(item.partition, 0), item.offset + 1)
            for partition, end in ends.items():
                position = db.get(RelayPosition, partition)
                if position is None:
                    db.add(RelayPosition(partition=partition, offset=end))
                elif position.offset < end:
                    position.offset = end

    def _ends(self) -> dict[int, tuple[int, int]]:
        consumer = self.new_consumer()
        try:
            meta = consumer.list_topics(self.topic, timeout=self.timeout_s).topics.get(self.topic)
            if meta is None or meta.error is not None or not meta.partitions:
                raise ReviewStoreError(
                    f"topic {self.topic} does not exist; provision topics "
                    "first (fraudctl topics create)"
                )
            return {
                p: consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=self.timeout_s
                )
                for p in meta.partitions
            }
        finally:
            consumer.close()

    def _read_back(self, ends: dict[int, tuple[int, int]]) -> list[Sent]:
        """Outbox ids on the topic between the recorded positions and `ends`; marked sent."""
        with self.store.sessions() as db:
            starts = {p.partition: p.offset for p in db.scalars(select(RelayPosition))}
        todo = {p: high for p, (_, high) in ends.items() if starts.get(p, 0) < high}
        found: list[Sent] = []
        if not todo:
            return found
        consumer = self.new_consumer()
        try:
            consumer.assign([TopicPartition(self.topic, p, starts.get(p, 0)) for p in todo])
            deadline = time.monotonic() + self.timeout_s * 2
            while todo:
                if time.monotonic() > deadline:
                    raise ReviewStoreError(
                        f"could not read {self.topic} to its end within {self.timeout_s * 2:g}s "
                        f"(partitions {sorted(todo)}); an open transaction of another producer "
                        "holds it back, try again"
                    )
                for msg in consumer.consume(500, timeout=0.5):
                    partition, offset, error = msg.partition() or 0, msg.offset() or 0, msg.error()
                    if error is not None:  # the end (past any transaction marker) or a failure
                        if error.code() != KafkaError._PARTITION_EOF:
                            raise ReviewStoreError(f"reading {self.topic} back failed: {error}")
                        if offset >= todo.get(partition, 0):
                            todo.pop(partition, None)
                        continue
                    if (outbox_id := dict(msg.headers() or []).get(HEADER)) is not None:
                        key = (msg.key() or b"").decode("utf-8", "replace")
                        found.append(Sent(int(outbox_id), partition, offset, key))
        finally:
            consumer.close()
        self._mark(found)
        with self.store.sessions.begin() as db:
            for partition, (_, high) in ends.items():
                position = db.get(RelayPosition, partition)
                if position is not None and position.offset < high:
                    position.offset = high
        return found
