"""Labels reach serving: `fraud.labels` folded into the label books of the labelled
payments' merchants, devices and IPs in Redis (`features.labels`).

Runs as a thread of the scorer process with its own consumer group (`<group>-labels`),
so label partitions are shared among the scorers like input partitions. Each label
partition has a checkpoint in Redis next to the books it wrote, moved by the same
script that writes them: Redis, not the group's Kafka offsets, says where to resume, so
every label is folded exactly once whatever fails (a crash between the write and
anything else replays nothing twice; a Redis that lost its data is rebuilt from the
topic's retention). A fraud label counts once per transaction id, from its
`labelled_at`; a book forgets payments `KEEP_S` older than its newest label (no window
of a payment scored now reaches them). Invalid records go to the dead-letter topic.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import cast

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from fraudstream import kafka_clients
from fraudstream.contracts import Label, Rejection, Verdict, dead_letter, decode, encode
from fraudstream.contracts.dead_letters import mask_pan_bytes
from fraudstream.errors import InfrastructureUnavailable
from fraudstream.features.labels import KEEP_S, LabelBook
from fraudstream.features.pipeline import StateKey, label_keys, label_paid_at
from fraudstream.features.state import id_hash
from fraudstream.scoring.core import OUTPUT_MAX_BYTES
from fraudstream.scoring.settings import ScorerSettings
from fraudstream.scoring.state import BookKey, Checkpoint, PartWrite, ScorerState

_log = logging.getLogger(__name__)
MAX_LABEL_BYTES = 16 * 1024


class LabelFolder:
    """Folds label partitions assigned to this instance into Redis, batch by batch."""

    def __init__(
        self,
        settings: ScorerSettings,
        bootstrap: str,
        state: ScorerState,
        *,
        on_folded: Callable[[int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.state = state
        self.on_folded = on_folded
        self.topic = settings.topic_labels
        self._known: dict[int, Checkpoint] = {}  # label partitions resumed from Redis
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="label-folder", daemon=True)
        self._dlq: Producer | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        consumer = kafka_clients.consumer(
            self.settings, self.bootstrap, f"{self.settings.scorer_group_id}-labels",
            {"enable.partition.eof": False, "partition.assignment.strategy": "range"},
        )  # fmt: skip
        self.state.label_topic = self.topic
        self.state.label_partitions = kafka_clients.partition_count(consumer, self.topic)
        consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        try:
            while not self._stop.is_set():
                messages = consumer.consume(num_messages=500, timeout=0.2)
                try:
                    self.fold(consumer, messages)
                except InfrastructureUnavailable as exc:
                    _log.warning("labels not folded (retried from the checkpoint): %s", exc)
                    self._known.clear()
                    self._stop.wait(1.0)
        except Exception:
            _log.exception("label folder stopped")
            raise
        finally:
            consumer.close()
            if self._dlq is not None:
                self._dlq.flush(5)

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._known.pop(tp.partition, None)  # resumed from Redis by the first batch

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._known.pop(tp.partition, None)

    def fold(self, consumer: Consumer, messages: Sequence[Message]) -> None:
        """Fold one consumed batch; records of a partition not resumed yet are dropped and
        the partition is sought to its Redis checkpoint."""
        by_partition: dict[int, list[Message]] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    _log.warning("labels consumer error: %s", error)
                continue
            by_partition.setdefault(message.partition() or 0, []).append(message)
        for partition, batch in by_partition.items():
            known = self._known.get(partition)
            if known is None:
                self._resume(consumer, partition)
                continue
            fresh = [m for m in batch if (m.offset() or 0) >= known.offset]
            if fresh:
                self._fold_partition(partition, known, fresh)

    def _resume(self, consumer: Consumer, partition: int) -> None:
        found = self.state.checkpoint(partition, labels=True)
        if found is None or not found.current:
            low, _high = consumer.get_watermark_offsets(TopicPartition(self.topic, partition),
                                                        timeout=10)  # fmt: skip
            _log.info("label partition %d: no label state in Redis: folding from offset %d",
                      partition, low)  # fmt: skip
            found = self.state.reset(partition, low, labels=True)
        consumer.seek(TopicPartition(self.topic, partition, found.offset))
        self._known[partition] = found

    def _fold_partition(self, partition: int, known: Checkpoint, batch: list[Message]) -> None:
        labels: list[tuple[int, Label, list[StateKey]]] = []
        for message in batch:
            label = decode(Label, message.value(), MAX_LABEL_BYTES)
            if isinstance(label, Rejection):
                self._dead_letter(message, label)
            elif label.verdict is Verdict.FRAUD:
                keys = label_keys(label.merchant_id, label.device_id, label.ip)
                if keys:
                    labels.append((message.offset() or 0, label, keys))
        entities = list(dict.fromkeys(key for _, _, keys in labels for key in keys))
        loaded = self.state.load(entities) if labels else None
        books: dict[BookKey, tuple[LabelBook, int]] = {}
        for offset, label, keys in labels:
            labelled_at = label.labelled_at.timestamp()
            txid = id_hash(label.transaction_id)
            for entity, entity_id in keys:
                key = (entity, entity_id, partition)
                book = books[key][0] if key in books else (
                    loaded.label_parts.get(key, LabelBook()) if loaded is not None
                    else LabelBook()
                )  # fmt: skip
                if book.add(label_paid_at(label.event_time, label.labelled_at), labelled_at,
                            txid):  # fmt: skip
                    book.forget_before(labelled_at - KEEP_S)
                    books[key] = (book, offset)
        end = (batch[-1].offset() or 0) + 1
        refused = self.state.save({}, {}, books, {partition: PartWrite(known, end)})
        if refused:
            _log.warning("label partition %d: checkpoint moved (another instance or a "
                         "rebuild): resuming from Redis", partition)  # fmt: skip
            self._known.pop(partition, None)
            return
        self._known[partition] = Checkpoint(end, known.epoch)
        if self.on_folded is not None:
            self.on_folded(len(labels))

    def _dead_letter(self, message: Message, rejection: Rejection) -> None:
        _log.warning("label at %s[%d]@%d refused: %s", self.topic, message.partition(),
                     message.offset(), rejection.reason.value)  # fmt: skip
        _kind, timestamp = message.timestamp()
        letter = dead_letter(
            rejection, topic=self.topic, partition=message.partition() or 0,
            offset=message.offset() or 0, timestamp_ms=timestamp if timestamp > 0 else None,
            key=message.key(), value=message.value(),
            headers=cast(list[tuple[str, bytes | None]], message.headers() or []),
            service="label-folder", now=datetime.now(UTC), max_bytes=OUTPUT_MAX_BYTES,
        )  # fmt: skip
        if self._dlq is None:
            self._dlq = kafka_clients.producer(self.settings, self.bootstrap)
        self._dlq.produce(
            self.settings.topic_dlq, encode(letter), key=mask_pan_bytes(message.key())
        )
        self._dlq.poll(0)
