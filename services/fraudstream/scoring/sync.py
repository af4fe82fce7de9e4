"""Keeping Redis a faithful cache of the log: which partitions' state this instance can
build on, and catching the others up by replaying the input topic.

State is a pure function of each input partition's log (see `features.state`), and every
partition's checkpoint in Redis says up to which offset it is folded in. So whatever went
wrong (a crash between the Kafka commit and the Redis write, a degraded batch while Redis
was away, a Redis restarted empty, a rebalance, a zombie refused by the checkpoint), the
fix is the same: read the partition's records from the checkpoint to where the scorer
stands, fold them with the scorer's own maths (no outputs), and save them with the
checkpoint. Small gaps are closed on the scoring thread before the batch that needs them;
large ones (a rebuild from the start of the topic) run on a background thread while that
partition's decisions are degraded, and the last stretch is again closed inline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from fraudstream.contracts import Transaction, decode_transactions
from fraudstream.errors import FraudStreamError, InfrastructureUnavailable
from fraudstream.features.compute import Event
from fraudstream.features.pipeline import (
    FeaturePipeline,
    PartKey,
    PartStates,
    StateKey,
    fold_parts,
    state_keys,
)
from fraudstream.features.state import id_hash
from fraudstream.scoring.state import Checkpoint, PartWrite, ScorerState

_log = logging.getLogger(__name__)
INLINE_ATTEMPTS = 3  # an inline catch-up resumes this often after a concurrent writer
JOB_POLL_S = 0.05  # a caught-up background job checks the loop's position this often
HANDOVER_WAIT_S = 5.0  # ... and leaves after this long if the loop has not taken over
# Records per replay save. Redis runs one script at a time: a 5,000-record save took
# 0.5-2 s on a busy 2-core machine (load_tests/bench_rebuild.py), blocking live batches
# behind it; 500 keeps each script near the size of a live batch's.
REPLAY_CHUNK = 500
Raw = tuple[int, bytes | None, int | None]  # offset, value, broker timestamp (ms)


class CatchUpFailed(FraudStreamError):
    """A replay could not finish (Redis refused or failed, or the log stopped short)."""


class CheckpointMoved(CatchUpFailed):
    """Another writer moved the checkpoint during a replay (a zombie's late save, a rebuild)."""


@dataclass
class Fold:
    """The scorer's state maths without outputs: records of one partition, in offset order,
    folded into that partition's parts exactly as scoring them would."""

    pipeline: FeaturePipeline
    max_message_bytes: int

    def __call__(
        self,
        partition: int,
        records: Sequence[Raw],
        states: PartStates,
        decoded: list[tuple[int, Transaction]] | None = None,
    ) -> dict[PartKey, tuple[list[float], int]]:
        """Fold `(offset, value, timestamp)` records (`decoded`: their accepted
        transactions, if already validated); returns the parts changed and their last
        offset. Validation is the scorer's own: the same records are refused."""
        oks = self.decode(records) if decoded is None else decoded
        events = [Event.from_transaction(tx) for _, tx in oks]
        txids = [id_hash(tx.transaction_id) for _, tx in oks]
        offsets = [records[index][0] for index, _ in oks]
        admitted = fold_parts(events, offsets, partition, states, txids)
        changed: dict[PartKey, tuple[list[float], int]] = {}
        for (index, _tx), event, ok in zip(oks, events, admitted, strict=True):
            if ok:
                for entity, entity_id in state_keys(event):
                    part = states[(entity, entity_id)][partition]
                    changed[(entity, entity_id, partition)] = (part, records[index][0])
        return changed

    @staticmethod
    def keys(decoded: Sequence[tuple[int, Transaction]]) -> list[StateKey]:
        """The entity keys the accepted transactions touch."""
        return list(dict.fromkeys(
            k for _, tx in decoded for k in state_keys(Event.from_transaction(tx))
        ))  # fmt: skip

    def decode(self, records: Sequence[Raw]) -> list[tuple[int, Transaction]]:
        """The accepted transactions (index into `records`, transaction)."""
        oks, _errs = decode_transactions(
            [value for _, value, _ in records], self.max_message_bytes,
            timestamps_ms=[timestamp for _, _, timestamp in records],
        )  # fmt: skip
        return oks


@dataclass
class Progress:
    """A catch-up's progress, for metrics and logs."""

    partition: int
    start: int
    target: int
    at: int
    started: float = field(default_factory=time.monotonic)

    @property
    def remaining(self) -> int:
        return max(self.target - self.at, 0)


class Replayer:
    """Reads one input partition between two offsets and folds it into Redis."""

    def __init__(
        self,
        make_consumer: Callable[[], Consumer],
        state: ScorerState,
        fold: Fold,
        *,
        chunk: int = REPLAY_CHUNK,
        stall_s: float = 30.0,
    ) -> None:
        self.make_consumer = make_consumer
        self.state = state
        self.fold = fold
        self.chunk = chunk
        self.stall_s = stall_s
        self._consumer: Consumer | None = None

    def catch_up(
        self,
        partition: int,
        checkpoint: Checkpoint,
        target: int,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        stop: threading.Event | None = None,
    ) -> Checkpoint:
        """Fold `[checkpoint.offset, target)` of `partition` into Redis, a chunk per save;
        returns the checkpoint reached (offset `target` unless stopped)."""
        progress = Progress(partition, checkpoint.offset, target, checkpoint.offset)
        if checkpoint.offset >= target:
            return checkpoint
        consumer = self._consumer = self._consumer or self.make_consumer()
        topic = self.state.topic
        consumer.assign([TopicPartition(topic, partition, checkpoint.offset)])
        try:
            while checkpoint.offset < target and not (stop is not None and stop.is_set()):
                records, reached = self._read(consumer, topic, partition, target)
                checkpoint = self._save(partition, checkpoint, records, reached)
                progress.at = checkpoint.offset
                if on_progress is not None:
                    on_progress(progress)
        finally:
            consumer.unassign()
        return checkpoint

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _read(
        self, consumer: Consumer, topic: str, partition: int, target: int
    ) -> tuple[list[Raw], int]:
        """Up to a chunk of records before `target`, and the offset reached after them."""
        records: list[Raw] = []
        last_progress = time.monotonic()
        while len(records) < self.chunk:
            messages = consumer.consume(num_messages=self.chunk - len(records), timeout=0.2)
            for message in messages:
                if _error(message):
                    continue
                offset = message.offset() or 0
                if offset >= target:
                    return records, target
                _kind, timestamp = message.timestamp()
                records.append((offset, message.value(), timestamp if timestamp > 0 else None))
            if messages:
                last_progress = time.monotonic()
            position = consumer.position([TopicPartition(topic, partition)])[0].offset
            if position >= target:
                return records, target  # only control records (commit markers) remained
            if not messages and time.monotonic() - last_progress > self.stall_s:
                raise CatchUpFailed(f"partition {partition}: no records before offset {target} "
                                    f"for {self.stall_s:.0f} s (position {position})")  # fmt: skip
        return records, records[-1][0] + 1

    def _save(
        self,
        partition: int,
        checkpoint: Checkpoint,
        records: list[Raw],
        reached: int,
    ) -> Checkpoint:
        states = PartStates()
        decoded = self.fold.decode(records)
        if decoded:
            loaded = self.state.load(self.fold.keys(decoded))
            for key, parts in loaded.states.items():
                if partition in parts:  # only this partition's part is folded
                    states[key] = {partition: parts[partition]}
                    part_key = (*key, partition)
                    states.offsets[part_key] = loaded.states.offsets[part_key]
        changed = self.fold(partition, records, states, decoded)
        refused = self.state.save(changed, {partition: PartWrite(checkpoint, reached)})
        if refused:
            raise CheckpointMoved(f"partition {partition}: the checkpoint moved during the "
                                  "catch-up (another instance or a rebuild)")  # fmt: skip
        return Checkpoint(reached, checkpoint.epoch)


def _error(message: Message) -> bool:
    error = message.error()
    if error is None:
        return False
    if error.code() != KafkaError._PARTITION_EOF:
        _log.warning("replay consumer error: %s", error)
    return True


class StateSync:
    """Per input partition: synced (this instance knows the checkpoint its next save
    expects) or not; a partition that is not is caught up before it is scored in full."""

    def __init__(
        self,
        state: ScorerState,
        make_replayer: Callable[[], Replayer],
        *,
        inline_max: int = 20_000,
        low_watermark: Callable[[int], int],
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.state = state
        self.make_replayer = make_replayer
        self.inline_max = inline_max
        self.low_watermark = low_watermark
        self.on_progress = on_progress
        self._lock = threading.Lock()
        self._known: dict[int, Checkpoint] = {}
        self._committed: dict[int, int] = {}  # the loop's committed position per partition
        self._jobs: dict[int, _Job] = {}
        self._job_slot = threading.Lock()  # background jobs run one at a time
        self._inline: Replayer | None = None

    def synced(self, partitions: Iterable[int]) -> dict[int, Checkpoint]:
        with self._lock:
            return {p: self._known[p] for p in partitions if p in self._known}

    def needs_catch_up(self, partitions: Iterable[int]) -> bool:
        """Some of these partitions are not synced and Redis may be reachable."""
        with self._lock:
            missing = [p for p in partitions if p not in self._known]
        return bool(missing) and self.state.breaker.allow()

    def catch_up(self, first_offsets: Mapping[int, int]) -> None:
        """Bring the unsynced partitions among `first_offsets` (partition -> the offset the
        loop scores next) to it: inline when the gap is small, else on a background job
        (those partitions stay unsynced, and degraded, until it is nearly done)."""
        with self._lock:
            todo = {p: o for p, o in first_offsets.items() if p not in self._known}
        for partition, first in list(todo.items()):
            if not self._take_over(partition, first):
                del todo[partition]  # its background job is still far behind
        if not todo:
            return
        try:
            checkpoints = self.state.checkpoints()
        except InfrastructureUnavailable:
            return  # still degraded; tried again with the next batch
        for partition, first in todo.items():
            found = checkpoints.get(partition)
            if found is None or not found.current or found.offset > first:
                found = self._restart(partition, found, first)
                if found is None:
                    continue
            if first - found.offset > self.inline_max:
                self._start_job(partition, found, first)
            else:
                self._catch_up_inline(partition, found, first)

    def handed(self, moves: Mapping[int, PartWrite]) -> None:
        """A batch was scored in full: its next save expects these checkpoints."""
        with self._lock:
            for partition, move in moves.items():
                if partition in self._known:
                    self._known[partition] = Checkpoint(move.offset, move.expected.epoch)

    def committed(self, positions: Mapping[int, int]) -> None:
        """The loop committed up to these positions (the background jobs' targets)."""
        with self._lock:
            self._committed.update(positions)

    def forget(self, partitions: Iterable[int]) -> None:
        """These partitions' state is not known any more (a failed save, a rolled-back or
        degraded batch, a rebalance): the next batch of each catches up first."""
        with self._lock:
            for partition in partitions:
                self._known.pop(partition, None)

    def release(self, partitions: Iterable[int]) -> None:
        """Revoked or newly assigned partitions: forget them and stop their jobs."""
        partitions = list(partitions)
        self.forget(partitions)
        with self._lock:
            jobs = [self._jobs.pop(p) for p in partitions if p in self._jobs]
            for partition in partitions:
                self._committed.pop(partition, None)
        for job in jobs:
            job.stop.set()

    def rebuilding(self) -> dict[int, Progress]:
        """Background catch-ups still running, by partition."""
        with self._lock:
            return {p: j.progress for p, j in self._jobs.items() if j.thread.is_alive()}

    def close(self) -> None:
        self.release(list(self._jobs))
        if self._inline is not None:
            self._inline.close()

    def _running(self, partition: int) -> bool:
        job = self._jobs.get(partition)
        return job is not None and job.thread.is_alive()

    def _take_over(self, partition: int, first: int) -> bool:
        """Whether the loop may catch `partition` up now: no background job runs for it,
        or the job is within the inline limit of `first` (it is then stopped, its last
        save done, and the loop closes the rest inline)."""
        with self._lock:
            job = self._jobs.get(partition)
        if job is None or not job.thread.is_alive():
            return True
        if first - job.progress.at > self.inline_max:
            return False
        job.stop.set()
        job.thread.join()
        with self._lock:
            self._jobs.pop(partition, None)
        return True

    def _catch_up_inline(self, partition: int, found: Checkpoint, first: int) -> None:
        """Replay up to `first` here and now. A checkpoint moved meanwhile (a zombie's late
        save of a batch it had committed) is read again and the replay resumed from it."""
        started = time.monotonic()
        self._inline = self._inline or self.make_replayer()
        for attempt in range(1, INLINE_ATTEMPTS + 1):
            try:
                reached = self._inline.catch_up(partition, found, first)
                break
            except CheckpointMoved as exc:
                moved = self._reread(partition)
                if attempt == INLINE_ATTEMPTS or moved is None or moved.offset > first:
                    _log.warning("partition %d not caught up (degraded meanwhile): %s",
                                 partition, exc)  # fmt: skip
                    return
                found = moved
            except (CatchUpFailed, InfrastructureUnavailable) as exc:
                _log.warning("partition %d not caught up (degraded meanwhile): %s", partition, exc)
                return
        if first > found.offset:
            _log.info("partition %d caught up from the log: offsets %d-%d in %.2f s",
                      partition, found.offset, first - 1, time.monotonic() - started)  # fmt: skip
        with self._lock:
            self._known[partition] = reached

    def _reread(self, partition: int) -> Checkpoint | None:
        try:
            found = self.state.checkpoint(partition)
        except InfrastructureUnavailable:
            return None
        return found if found is not None and found.current else None

    def _restart(self, partition: int, found: Checkpoint | None, first: int) -> Checkpoint | None:
        """A new epoch from the start of the log: Redis has no usable state for the
        partition (a new deployment, a Redis restarted empty, a layout change, or a
        checkpoint ahead of the log after an offset reset)."""
        start = self.low_watermark(partition)
        why = (
            "no state (a new deployment, or Redis lost its data)" if found is None
            else f"state of layout v{found.version}" if not found.current
            else f"a checkpoint ({found.offset}) ahead of the log position {first}"
        )  # fmt: skip
        log = _log.info if found is None and first - start <= self.inline_max else _log.warning
        log("partition %d: Redis has %s: building its state from the log, offsets %d-%d",
            partition, why, start, first - 1)  # fmt: skip
        try:
            return self.state.reset(partition, start)
        except InfrastructureUnavailable as exc:
            _log.warning("partition %d: rebuild not started: %s", partition, exc)
            return None

    def _start_job(self, partition: int, found: Checkpoint, first: int) -> None:
        _log.warning(
            "partition %d: %d offsets behind in Redis: catching up in the background (its "
            "decisions are degraded until done)", partition, first - found.offset,
        )  # fmt: skip
        with self._lock:
            self._committed.setdefault(partition, first)
        job = _Job(Progress(partition, found.offset, first, found.offset))
        job.thread = threading.Thread(
            target=self._run_job, args=(job, found), name=f"state-catch-up-{partition}",
            daemon=True,
        )  # fmt: skip
        with self._lock:
            self._jobs[partition] = job
        job.thread.start()

    def _run_job(self, job: _Job, checkpoint: Checkpoint) -> None:
        """Chase the loop's committed position until the rest is small enough for inline.
        One job runs at a time: on 2 cores, partitions one after the other rebuilt faster
        than a thread each (99 vs 134 s for 100,000 cards, load_tests/bench_rebuild.py)."""
        partition = job.progress.partition
        with self._job_slot:
            if not job.stop.is_set():
                self._chase(job, checkpoint, partition)

    def _chase(self, job: _Job, checkpoint: Checkpoint, partition: int) -> None:
        """Follow the loop's committed position until the loop takes over (`_take_over`
        stops the job once it is within the inline limit of the next batch)."""
        replayer = self.make_replayer()

        def report(progress: Progress) -> None:
            job.progress.at = progress.at
            self._report(progress)

        caught_up_at: float | None = None
        try:
            while not job.stop.is_set():
                with self._lock:
                    target = self._committed.get(partition, checkpoint.offset)
                job.progress.target = target
                if target <= checkpoint.offset:  # wait for the loop to take over, a while
                    caught_up_at = caught_up_at or time.monotonic()
                    if time.monotonic() - caught_up_at > HANDOVER_WAIT_S:
                        break  # no traffic on it: the loop's idle catch-up finishes it
                    job.stop.wait(JOB_POLL_S)
                    continue
                caught_up_at = None
                checkpoint = replayer.catch_up(partition, checkpoint, target, stop=job.stop,
                                               on_progress=report)  # fmt: skip
                job.progress.at = checkpoint.offset
            elapsed = time.monotonic() - job.progress.started
            _log.info("partition %d: background catch-up reached offset %d in %.1f s",
                      partition, checkpoint.offset, elapsed)  # fmt: skip
        except (CatchUpFailed, InfrastructureUnavailable) as exc:
            _log.warning("partition %d: background catch-up stopped: %s", partition, exc)
        finally:
            replayer.close()

    def _report(self, progress: Progress) -> None:
        if self.on_progress is not None:
            self.on_progress(progress)


@dataclass
class _Job:
    progress: Progress
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread = field(default_factory=threading.Thread)
