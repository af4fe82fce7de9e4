"""The scorer's Kafka loop: consume a batch, score it, produce and commit in one transaction.

Exactly once: decisions, review cases, dead letters and the consumer offsets of a batch
are committed in one Kafka transaction (read_committed readers see all or nothing).
Batch N's Redis state write and then its commit (offsets to the transaction, then
EndTxn: two broker round trips) run on a helper thread while batch N+1 is consumed and
scored; N+1 reads N's states from memory where N's write may not have landed yet, and
N+1's transaction starts only once N's has committed. If N's transaction fails, N+1 is
dropped too and the consumer rewinds to N's first offsets: both are read again, and
their Redis memos make the replay emit the same decisions (state is saved before the
commit). A revocation waits for the batch in flight, so a partition's next owner starts
after it.
Error handling follows librdkafka's transactional producer classes:
- `txn_requires_abort`: abort, rewind the consumer to the batch's first offsets, go on;
- a timeout or other failure in commit/abort: the outcome is unknown, so the producer is
  rebuilt with the same transactional.id (fencing the old epoch) and the consumer rewound
  (never start the next transaction on that producer: KAFKA-17754);
- fatal (fenced, ...): stop; the process exits non-zero and is restarted.
SIGTERM finishes the batches in flight (their transactions commit or abort), then exits.

At least once (`FRAUD_SCORER_DELIVERY=at_least_once`) skips the transaction: outputs are
visible as soon as the broker acknowledges them, and the offsets are committed after
every output of the batch was acknowledged. A crash or a lost output makes a batch be
read again; its memos re-emit the same bytes, so consumers deduplicate by transaction_id.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import ConfigResource, ResourceType

from fraudstream import kafka_clients
from fraudstream.errors import FraudStreamError
from fraudstream.rules.engine import RuleProvider
from fraudstream.scoring import faults
from fraudstream.scoring.core import (
    DECISIONS,
    DLQ,
    POISON_LETTER_BYTES,
    RECORD_OVERHEAD_BYTES,
    REVIEW,
    BatchResult,
    BatchScorer,
    InputRecord,
    PendingSave,
    partition_offsets,
)
from fraudstream.scoring.isolation import Isolation, RecordId
from fraudstream.scoring.settings import ScorerSettings
from fraudstream.scoring.state import ScorerState
from fraudstream.scoring.sync import Fold, Replayer, StateSync

_log = logging.getLogger(__name__)
PRODUCER_MAX_BYTES = 1_000_000  # librdkafka's message.max.bytes, which we keep


class FatalKafkaError(FraudStreamError):
    """The producer was fenced or hit a fatal error: this instance must stop."""


class OutputsNotDelivered(FraudStreamError):
    """At least once: some outputs of a batch were not acknowledged; it is read again."""


@dataclass
class _InFlight:
    """A batch whose state write and commit (or delivery) run on the helper thread."""

    records: Sequence[InputRecord]
    result: BatchResult
    commit: Future[None] = field(repr=False)
    positions: list[TopicPartition] = field(default_factory=list)


class ScorerLoop:
    """Binds a `BatchScorer` to Kafka with transactions."""

    def __init__(
        self,
        settings: ScorerSettings,
        bootstrap: str,
        scorer: BatchScorer,
        on_batch: Callable[[BatchResult, Sequence[InputRecord]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.scorer = scorer
        self.on_batch = on_batch
        self.on_abort: Callable[[], None] | None = None
        self.on_fenced: Callable[[], None] | None = None
        self.exactly_once = settings.scorer_delivery == "exactly_once"
        self.topics = {
            DECISIONS: settings.topic_decisions,
            REVIEW: settings.topic_review,
            DLQ: settings.topic_dlq,
        }
        self.assigned: set[tuple[str, int]] = set()
        self.idle: Callable[[], None] = lambda: None  # about once a second (health, lag)
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._committer: ThreadPoolExecutor | None = None
        self._in_flight: _InFlight | None = None
        self._rolled_back: list[InputRecord] = []  # to read again (set during a rebalance)
        self._failed: list[KafkaError] = []  # at least once: the batch's failed deliveries
        self.sync: StateSync | None = None
        self.rule_source: RuleProvider | None = None  # for metrics of its reloads
        # Replays use their own Redis client (a long timeout, their own breaker): a catch-up
        # save is bigger than a live batch's and must not trip the live circuit.
        self.replay_state: ScorerState | None = None
        self.on_progress: Callable[[object], None] | None = None
        self.on_poison: Callable[[RecordId], None] | None = None
        self.isolation = Isolation(settings.scorer_batch_max)
        self._committed: dict[tuple[str, int], int] = {}  # the group's offsets, as committed
        self._ticked = 0.0

    def run(self, stop: threading.Event) -> None:
        """Process batches until `stop` is set; commits what is in flight, then closes."""
        consumer = self._make_consumer()
        self._producer = self._make_producer()
        self.sync = self._make_sync(consumer)
        committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="txn-commit")
        self._committer = committer
        consumer.subscribe(
            [self.settings.topic_transactions], on_assign=self._on_assign,
            on_revoke=self._on_revoke, on_lost=self._on_revoke,
        )  # fmt: skip
        wait = self.settings.scorer_batch_wait_ms / 1000
        try:
            while not stop.is_set():
                messages = consumer.consume(num_messages=self.isolation.limit, timeout=wait)
                records = _records(messages)
                if self._rolled_back:  # a commit failed during a rebalance: read again
                    _rewind(consumer, [*self._rolled_back, *records])
                    self._rolled_back = []
                    continue
                ticked = self._tick()
                if not records:
                    if self._settle(consumer) and ticked:
                        self._catch_up_idle(consumer)
                    continue
                positions = self._positions(consumer)  # before the next consume moves them
                if not self._score_and_commit(consumer, records, positions):
                    continue
        finally:
            self._shut_down(consumer, committer)

    def _score_and_commit(
        self, consumer: Consumer, records: list[InputRecord], positions: list[TopicPartition]
    ) -> bool:
        """Catch up the batch's partitions if needed, score it, and hand it to the commit
        thread once the previous batch committed; False when the batch was rolled back."""
        firsts = {p: o for (_t, p), o in partition_offsets(records, min).items()}
        sync = self.sync
        if sync is not None and sync.needs_catch_up(firsts):
            # The replay reads the log up to this batch: nothing may be in flight.
            if not self._settle(consumer, also_rewind=records):
                return False
            sync.catch_up(firsts)
        synced = sync.synced(firsts) if sync is not None else {}
        poison = self.isolation.poison.intersection(_ids(records))
        result = self.scorer.process(records, synced, unsaved=self._unsaved(), poison=poison)
        if sync is not None:
            sync.forget(result.lost | result.degraded_partitions)
            if result.pending_save is not None:
                sync.handed(result.pending_save.moves)
        if not self._settle(consumer, also_rewind=records):
            return False
        self._start_commit(consumer, records, result, positions)
        return True

    def _shut_down(self, consumer: Consumer, committer: ThreadPoolExecutor) -> None:
        try:
            self._settle(consumer)
        finally:
            committer.shutdown()
            self._committer = None
            if self.sync is not None:
                self.sync.close()
            consumer.close()
            try:
                self.producer.flush(5)
            except KafkaException as exc:
                # A fenced producer (another instance took this transactional.id) cannot
                # flush; the decisions in flight were aborted by the broker.
                _log.error("producer not flushed at shutdown: %s", exc.args[0])

    def _output_limits(self) -> dict[str, int]:
        """Largest value each output topic accepts (its max.message.bytes, and the producer's
        limit), less room for the key, headers and framing."""
        admin = kafka_clients.admin_client(self.settings, self.bootstrap)
        limits = {}
        for role, topic in self.topics.items():
            resource = ConfigResource(ResourceType.TOPIC, topic)
            try:
                config = admin.describe_configs([resource])[resource].result(timeout=30)
                topic_max = int(config["max.message.bytes"].value)
            except (KafkaException, KeyError, ValueError) as exc:
                _log.warning("max.message.bytes of %s unknown (%s): assuming 1 MB", topic, exc)
                topic_max = 1_048_588
            limits[role] = min(topic_max, PRODUCER_MAX_BYTES) - RECORD_OVERHEAD_BYTES
        for role, limit in limits.items():
            if limit < POISON_LETTER_BYTES:
                raise FatalKafkaError(
                    f"{self.topics[role]} accepts records of {limit + RECORD_OVERHEAD_BYTES} "
                    f"bytes at most: raise its max.message.bytes to at least "
                    f"{POISON_LETTER_BYTES + RECORD_OVERHEAD_BYTES}"
                )
        _log.info("output size limits: %s", limits)
        return limits

    def _make_sync(self, consumer: Consumer) -> StateSync | None:
        self.scorer.output_limits = self._output_limits()
        state = self.scorer.state
        if state is None:
            return None
        topic = self.settings.topic_transactions
        partitions = kafka_clients.partition_count(consumer, topic)
        if not partitions:
            raise FatalKafkaError(f"input topic {topic!r} not found: run `fraudctl topics "
                                  "create` (or check FRAUD_TOPIC_TRANSACTIONS)")  # fmt: skip
        state.topic, state.partitions = topic, partitions
        labels = self.settings.topic_labels
        state.label_topic = labels
        state.label_partitions = kafka_clients.partition_count(consumer, labels)
        if not state.label_partitions:
            _log.warning("labels topic %r not found: label risk features stay 0", labels)
        fold = Fold(self.scorer.models().pipeline, self.scorer.max_message_bytes)
        replay_state = self.replay_state or state
        replay_state.topic, replay_state.partitions = state.topic, state.partitions

        def replayer() -> Replayer:
            return Replayer(lambda: kafka_clients.consumer(
                self.settings, self.bootstrap, f"{self.settings.scorer_group_id}-replay",
                {"enable.partition.eof": False, "fetch.min.bytes": 1},
            ), replay_state, fold)  # fmt: skip

        def low_watermark(partition: int) -> int:
            low, _high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=10
            )
            return int(low)

        return StateSync(
            state, replayer, low_watermark=low_watermark, on_progress=self.on_progress,
            inline_max=self.settings.state_inline_catch_up_max,
        )  # fmt: skip

    def _tick(self) -> bool:
        """About once a second: the `idle` hook (health, lag); True when it ran."""
        now = time.monotonic()
        if now - self._ticked < 1.0:
            return False
        self._ticked = now
        self.idle()
        return True

    def _catch_up_idle(self, consumer: Consumer) -> None:
        """With no input waiting, bring assigned partitions whose Redis state is behind (a
        save lost in a crash, a degraded last batch) up to where the loop stands, so Redis
        is current without waiting for the next record of each partition."""
        sync = self.sync
        if sync is None or not self.assigned:
            return
        partitions = [p for _topic, p in self.assigned]
        if not sync.needs_catch_up(partitions):
            return
        targets = {}
        for tp in consumer.position(consumer.assignment()):
            committed = self._committed.get((tp.topic, tp.partition), -1)
            at = tp.offset if tp.offset >= 0 else committed
            if at >= 0:
                targets[tp.partition] = at
        sync.catch_up(targets)

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            raise FatalKafkaError("the scorer loop is not running")
        return self._producer

    def _positions(self, consumer: Consumer) -> list[TopicPartition]:
        return [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]

    def _start_commit(
        self,
        consumer: Consumer,
        records: Sequence[InputRecord],
        result: BatchResult,
        positions: list[TopicPartition],
    ) -> None:
        """Hand the batch to the helper thread, which saves its state, then commits.
        Exactly once, its transaction begins and its outputs are produced here first (the
        commit waits for the save); a failure to begin or produce rolls back now."""
        producer, committer = self.producer, self._committer
        if committer is None:
            raise FatalKafkaError("the scorer loop is not running")
        if not self.exactly_once:
            commit = committer.submit(self._deliver, consumer, result, positions)
            self._in_flight = _InFlight(records, result, commit, positions)
            return
        started = time.perf_counter()
        try:
            producer.begin_transaction()
            half = len(result.outputs) // 2
            for i, (role, key, value) in enumerate(result.outputs):
                if i == half:
                    faults.point("mid_produce")
                self._produce(producer, self.topics[role], key, value)
        except KafkaException as exc:
            self._recover(exc.args[0])
            self._failed_batch(records)
            _rewind(consumer, records)
            return
        result.stage_seconds["produce"] = time.perf_counter() - started
        metadata = consumer.consumer_group_metadata()
        commit = committer.submit(self._commit, result, positions, metadata)
        self._in_flight = _InFlight(records, result, commit, positions)

    def _delivery_failed(self, error: KafkaError | None, _message: Message) -> None:
        """At least once: librdkafka reports failed deliveries only (one batch in flight)."""
        if error is not None:
            self._failed.append(error)

    def _deliver(
        self, consumer: Consumer, result: BatchResult, positions: list[TopicPartition]
    ) -> None:
        """At least once, on the helper thread: produce the outputs, wait until each one is
        acknowledged, commit the offsets, then save the state. A lost output raises (the
        batch is read again); a refused offset commit only means the batch may be decided
        again later (its state is then not saved: the replay of the log folds it)."""
        producer, started = self.producer, time.perf_counter()
        failed: list[KafkaError] = []
        self._failed = failed
        for role, key, value in result.outputs:
            self._produce(producer, self.topics[role], key, value)
        produced = time.perf_counter()
        result.stage_seconds["produce"] = produced - started
        unsent = producer.flush(self.settings.scorer_transaction_timeout_s)
        if unsent or failed:
            raise OutputsNotDelivered(
                f"{unsent} outputs unacknowledged, {len(failed)} failed: {failed[:3]}"
            )
        try:
            consumer.commit(offsets=positions, asynchronous=False)
        except KafkaException as exc:
            _log.warning("offsets not committed (outputs were delivered): %s", exc)
            if result.pending_save is not None:
                result.unsaved |= set(result.pending_save.moves)
            return
        result.stage_seconds["commit"] = time.perf_counter() - produced
        result.committed_at = time.time()
        faults.point("after_commit_before_save")
        self.scorer.save(result)

    def _commit(
        self, result: BatchResult, positions: list[TopicPartition], metadata: object
    ) -> None:
        """Exactly once, on the helper thread: add the offsets and commit (the only producer
        calls while the transaction is open), then save the state: Redis never holds an
        update whose decision is not committed."""
        faults.point("before_commit")
        producer, timeout = self.producer, self.settings.scorer_transaction_timeout_s
        started = time.perf_counter()
        deadline = time.monotonic() + timeout
        _retrying(lambda: producer.send_offsets_to_transaction(positions, metadata, timeout),
                  deadline)  # fmt: skip
        _retrying(lambda: producer.commit_transaction(timeout), deadline)
        result.stage_seconds["commit"] = time.perf_counter() - started
        result.committed_at = time.time()
        faults.point("after_commit_before_save")
        self.scorer.save(result)
        faults.point("after_save")

    def _unsaved(self) -> PendingSave | None:
        """The state writes of the batch in flight, which may not have reached Redis yet."""
        return self._in_flight.result.pending_save if self._in_flight is not None else None

    def _settle(
        self, consumer: Consumer, also_rewind: Sequence[InputRecord] = (), *, rewind: bool = True
    ) -> bool:
        """Wait for the batch in flight. True when it committed (or there was none); False
        when it was rolled back: the consumer is rewound to its first offsets and to those
        of `also_rewind` (a later batch that must not commit either), or, with
        `rewind=False` (inside a rebalance callback), the main loop rewinds after the poll."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is None:
            return True
        try:
            in_flight.commit.result()
        except (KafkaException, OutputsNotDelivered) as exc:
            if isinstance(exc, KafkaException):
                self._recover(exc.args[0])
            else:
                _log.warning("reading the batch again: %s", exc)
            again = [*in_flight.records, *also_rewind]
            self._failed_batch(in_flight.records)
            self._forget(again)
            if rewind:
                _rewind(consumer, again)
            else:
                self._rolled_back += again
            return False
        self.isolation.committed(_ids(in_flight.records))
        for tp in in_flight.positions:
            self._committed[(tp.topic, tp.partition)] = tp.offset
        if self.sync is not None:
            self.sync.forget(in_flight.result.unsaved)
            self.sync.committed({tp.partition: tp.offset for tp in in_flight.positions})
        if self.on_batch is not None:
            self.on_batch(in_flight.result, in_flight.records)
        return True

    def _failed_batch(self, records: Sequence[InputRecord]) -> None:
        """A batch was rolled back: its partitions' state expectations are unknown, and a
        record failing alone twice is set aside (see `scoring.isolation`)."""
        self._forget(records)
        found = self.isolation.failed(_ids(records))
        if found is not None:
            _log.error("input %s[%d]@%d makes every transaction holding it fail: it is "
                       "dead-lettered as poison", *found)  # fmt: skip
            if self.on_poison is not None:
                self.on_poison(found)
        elif self.isolation.limit < self.settings.scorer_batch_max:
            _log.warning("batches keep failing: isolating with batches of %d",
                         self.isolation.limit)  # fmt: skip

    def _forget(self, records: Sequence[InputRecord]) -> None:
        """A rolled-back batch's partitions: their next save expectation is unknown."""
        if self.sync is not None:
            self.sync.forget({r.partition for r in records})

    def _recover(self, error: KafkaError) -> None:
        """Roll the open transaction back (the caller rewinds the consumer)."""
        if error.fatal():
            if error.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                                KafkaError.INVALID_PRODUCER_EPOCH):  # fmt: skip
                raise FatalKafkaError(
                    f"fenced ({error}): either this scorer was frozen longer than its "
                    f"transaction timeout ({self.broker_transaction_timeout_ms / 1000:g} s) "
                    "and the broker aborted its transaction, or another scorer started with "
                    f"transactional.id {self.settings.transactional_id!r} (give every scorer "
                    "its own FRAUD_SCORER_INSTANCE)"
                )
            raise FatalKafkaError(f"fatal Kafka producer error, stopping: {error}")
        if error.txn_requires_abort():
            _log.warning("aborting transaction: %s", error)
            self._abort()
        else:
            _log.error("transaction outcome unknown (%s): rebuilding the producer", error)
            self._rebuild()
            if self.on_abort is not None:
                self.on_abort()

    def _abort(self) -> None:
        try:
            self.producer.abort_transaction(self.settings.scorer_transaction_timeout_s)
        except KafkaException as abort_error:
            _log.error("abort failed (%s): rebuilding the producer", abort_error)
            self._rebuild()
        if self.on_abort is not None:
            self.on_abort()

    def _rebuild(self) -> None:
        """A new producer with the same transactional.id: its init_transactions() bumps the
        epoch, which completes or aborts whatever the old one left open."""
        if self._producer is not None:
            try:
                self._producer.flush(1)
            except KafkaException as exc:
                # A fatal producer cannot flush. Seen when the broker timed out a
                # transaction left open across its own restart, then refused the abort
                # as fenced; its outputs are aborted with it.
                _log.warning("old producer not flushed: %s", exc.args[0])
        self._producer = self._make_producer()

    def _produce(self, producer: Producer, topic: str, key: bytes | None, value: bytes) -> None:
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                return
            except BufferError:
                producer.poll(0.01)

    def _make_consumer(self) -> Consumer:
        self._consumer = kafka_clients.consumer(
            self.settings,
            self.bootstrap,
            self.settings.scorer_group_id,
            consumer_tuning(self.settings.scorer_batch_wait_ms),
        )
        return self._consumer

    def _make_producer(self) -> Producer:
        if not self.exactly_once:
            # Reports for failed deliveries only: a Python callback per message would cost
            # more than the rest of the produce path.
            return kafka_clients.producer(
                self.settings, self.bootstrap,
                {"linger.ms": 1, "delivery.report.only.error": True,
                 "on_delivery": self._delivery_failed},
            )  # fmt: skip
        producer = kafka_clients.producer(
            self.settings, self.bootstrap,
            # The next transaction right after a commit is often refused with
            # CONCURRENT_TRANSACTIONS; librdkafka's default 100 ms retry backoff then sets a
            # 100 ms floor on every batch (measured: 107 ms cycle vs 12 ms with 5 ms).
            {"transactional.id": self.settings.transactional_id, "linger.ms": 1,
             "transaction.timeout.ms": self.broker_transaction_timeout_ms,
             "retry.backoff.ms": 5, "retry.backoff.max.ms": 20},
        )  # fmt: skip
        # Retriable while the coordinator still completes the previous incarnation's
        # transaction (CONCURRENT_TRANSACTIONS), for up to its timeout.
        _retrying(lambda: producer.init_transactions(30), time.monotonic() + 60)
        return producer

    @property
    def broker_transaction_timeout_ms(self) -> int:
        """How long the broker lets a transaction stay open before aborting it: twice the
        client's budget for a commit. While a scorer is frozen (SIGSTOP, a VM pause, a
        partition from the broker) with a transaction open, read_committed readers see
        nothing on the decision partitions it wrote until this passes and the broker's
        next check (transaction.abort.timed.out.transaction.cleanup.interval.ms, 10 s by
        default) aborts it. Kafka Streams uses 10 s for the same reason; librdkafka's
        default of 60 s stalled the decision topic for over a minute."""
        return int(2_000 * self.settings.scorer_transaction_timeout_s)

    def lag(self) -> int:
        """The group's lag on the assigned partitions: records between the committed offset
        and the end (cached watermarks: no I/O). A loop that reads and rolls back batches
        without committing shows here, unlike the consumer's position."""
        consumer = self._consumer
        if consumer is None:
            return 0
        behind = 0
        for tp in consumer.assignment():
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
            committed = self._committed.get((tp.topic, tp.partition), -1)
            if high >= 0:
                behind += max(high - max(committed, 0), 0)
        return behind

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        changed = [(p.topic, p.partition) for p in partitions]
        try:
            for tp in consumer.committed(partitions, timeout=10):
                self._committed[(tp.topic, tp.partition)] = tp.offset
        except KafkaException as exc:
            _log.warning("committed offsets unknown (lag overstated until a commit): %s", exc)
        if self.sync is not None:
            self.sync.release(p.partition for p in partitions)  # checked by the first batch
        self.assigned |= set(changed)
        _log.info("assigned %s", sorted(self.assigned))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The commit in flight includes these partitions' offsets: it finishes first.
        self._settle(consumer, rewind=False)
        changed = [(p.topic, p.partition) for p in partitions]
        if self.sync is not None:
            self.sync.release(p.partition for p in partitions)
        self.assigned -= set(changed)
        for key in changed:
            self._committed.pop(key, None)


def consumer_tuning(batch_wait_ms: int) -> dict[str, object]:
    """The scorer's consumer settings. A fetch waits for 64 KB or the batch wait instead of
    returning on the first byte, so a fast topic gives fewer, fuller fetches. Measured
    against the former 1 byte / 100 ms (bench_scorer.py tuned-clients rows), the result
    was within this shared machine's run-order noise: better at 2,000 tx/s, worse at 300.
    A 6 s session (the broker's minimum) with 1.5 s heartbeats: after a broker restart
    decisions were steady again 7.5-8.4 s after it answered, against 12.2-14.1 s with 10 s
    (load_tests/broker_restart.py --ab, two runs each); a crashed scorer's partitions move
    after 6 s instead of 10."""
    return {"enable.partition.eof": False, "fetch.min.bytes": 64 * 1024,
            "fetch.wait.max.ms": max(batch_wait_ms, 1), "max.poll.interval.ms": 60_000,
            "session.timeout.ms": 6_000, "heartbeat.interval.ms": 1_500}  # fmt: skip


def _retrying(call: Callable[[], None], deadline: float) -> None:
    """`call` again after errors librdkafka calls retriable (not those that need an abort),
    until `deadline` (monotonic); other errors, and the last retriable one, propagate.
    CONCURRENT_TRANSACTIONS counts as retriable: the coordinator is still completing the
    previous transaction (its abort markers), which librdkafka does not always retry itself."""
    while True:
        try:
            call()
            return
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            retriable = error.retriable() or error.code() == KafkaError.CONCURRENT_TRANSACTIONS
            if not retriable or error.txn_requires_abort() or error.fatal():
                raise
            if time.monotonic() >= deadline:
                raise
            _log.info("retrying after a retriable Kafka error: %s", error)
            time.sleep(0.01)


def _records(messages: list[Message]) -> list[InputRecord]:
    records = []
    for message in messages:
        error = message.error()
        if error is not None:
            if error.fatal():
                raise FatalKafkaError(f"fatal Kafka consumer error, stopping: {error}")
            if error.code() != KafkaError._PARTITION_EOF:
                _log.warning("consumer error: %s", error)
            continue
        _kind, timestamp = message.timestamp()
        records.append(
            InputRecord(
                topic=message.topic() or "", partition=message.partition() or 0,
                offset=message.offset() or 0, timestamp_ms=timestamp if timestamp > 0 else None,
                key=message.key(), value=message.value(),
                headers=tuple(cast(list[tuple[str, bytes | None]], message.headers() or [])),
            )
        )  # fmt: skip
    return records


def _ids(records: Sequence[InputRecord]) -> list[RecordId]:
    return [(r.topic, r.partition, r.offset) for r in records]


def _rewind(consumer: Consumer, records: Sequence[InputRecord]) -> None:
    """Seek every partition of the batch back to its first record, to process it again."""
    for (topic, partition), offset in partition_offsets(records, min).items():
        try:
            consumer.seek(TopicPartition(topic, partition, offset))
        except KafkaException as exc:
            # Revoked meanwhile: its new owner resumes from the committed offset.
            _log.warning("not rewinding %s[%d]: %s", topic, partition, exc)
