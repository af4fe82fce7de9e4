"""The scorer's Redis state: entity parts per input partition, and a checkpoint per partition.

Redis is a cache of what the committed input log implies, never ahead of it:
- every entity key `<prefix>:<entity>:<id>` is a hash with one field per input partition
  (that partition's part of the state, see `features.state.combine`), so instances that
  own different partitions never overwrite each other's updates;
- `<prefix>:ckpt:<topic>:<partition>` holds `offset` (the next input offset whose update
  is not in Redis), `epoch` (a random id of this incarnation of the partition's state) and
  `version` (the layout version). Parts of another epoch or layout read as absent.
A batch's parts are written after its Kafka commit, by one script that moves each of its
partitions' checkpoint from the offset the writer expects to the batch's end, and writes
that partition's parts only if the checkpoint matched. A writer whose expectation is stale
(a zombie, a write that raced a rebuild, a Redis that lost data) is refused per partition
and the scorer catches that partition up from the log (`scoring.sync`).

Redis calls use millisecond timeouts and no retries; repeated failures open a circuit
breaker so a slow or dead Redis costs one fast check per batch, not a timeout per batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar, cast

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from fraudstream.errors import InfrastructureUnavailable
from fraudstream.features.labels import LabelBook, decode_book, encode_book
from fraudstream.features.pipeline import PartKey, PartStates, StateKey
from fraudstream.features.state import (
    LAYOUT_VERSION,
    LAYOUTS,
    Entity,
    decode_part,
    encode_part,
    part_header,
)
from fraudstream.redis_nodes import KeysNotOnNode
from fraudstream.scoring.redis_io import (
    CheckpointMove,
    ClusterNodes,
    FieldWrites,
    SingleNode,
    StateIO,
)

T = TypeVar("T")
_log = logging.getLogger(__name__)
# An entity key expires this long after its last write beyond its logical time-to-live.
# Expiry only frees memory: a part idle for longer than the logical TTL (in event time)
# reads as empty anyway, and event times are bounded by the broker timestamps.
EXPIRY_MARGIN_S = 30 * 86400
EPOCH_ORIGIN = 1_577_836_800  # epochs count seconds from 2020-01-01 (fit 32 bits to 2156)


class CircuitBreaker:
    """Closed -> open after `failures` consecutive errors; half-open after `cooldown_s`.
    Shared by the scoring thread and the commit thread, hence the lock."""

    CLOSED, HALF_OPEN, OPEN = 0, 1, 2

    def __init__(
        self,
        failures: int = 3,
        cooldown_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.on_change = on_change
        self._lock = threading.Lock()
        self._consecutive = 0
        self._opened_at: float | None = None

    @property
    def state(self) -> int:
        opened = self._opened_at
        if opened is None:
            return self.CLOSED
        if self.clock() - opened >= self.cooldown_s:
            return self.HALF_OPEN
        return self.OPEN

    def allow(self) -> bool:
        return self.state != self.OPEN

    def success(self) -> None:
        with self._lock:
            was_open = self._opened_at is not None
            self._consecutive = 0
            self._opened_at = None
        if was_open:
            _log.info("Redis reachable again: circuit closed")
            self._changed()

    def failure(self) -> None:
        with self._lock:
            self._consecutive += 1
            opening = self._consecutive >= self.failures or self.state == self.HALF_OPEN
            first = opening and self._opened_at is None
            if opening:
                self._opened_at = self.clock()
        if first:
            _log.warning("Redis failed %d times in a row: circuit open for %.1f s",
                         self._consecutive, self.cooldown_s)  # fmt: skip
        if opening:
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self.state)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where a partition's state in Redis stands: the next input offset not folded in,
    the epoch of this incarnation of the state, and its layout version."""

    offset: int
    epoch: int
    version: int = LAYOUT_VERSION

    @property
    def current(self) -> bool:
        return self.version == LAYOUT_VERSION


@dataclass
class Loaded:
    """What one read returned: the entity parts and merchant label books (of current
    epochs only), and the checkpoints (None when Redis has none) of every input partition
    and every label partition."""

    states: PartStates
    checkpoints: dict[int, Checkpoint | None]
    labels: dict[StateKey, LabelBook] = field(default_factory=dict)  # merged over label partitions
    label_checkpoints: dict[int, Checkpoint | None] = field(default_factory=dict)
    label_parts: dict[BookKey, LabelBook] = field(default_factory=dict)  # per label partition


@dataclass(frozen=True)
class PartWrite:
    """A partition's checkpoint move: from what the writer expects to the batch's end."""

    expected: Checkpoint
    offset: int


BookKey = tuple[Entity, str, int]  # (merchant, device or IP, label partition)


class ScorerState:
    """Batch reads and checkpointed writes of entity parts (one script each per batch)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "fs",
        topic: str = "transactions",
        partitions: int = 1,
        label_topic: str = "fraud.labels",
        label_partitions: int = 0,
        breaker: CircuitBreaker | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.topic = topic
        self.partitions = partitions
        self.label_topic = label_topic
        self.label_partitions = label_partitions
        self.breaker = breaker or CircuitBreaker()
        self.on_error = on_error
        self.io: StateIO = (
            ClusterNodes(client) if isinstance(client, RedisCluster) else SingleNode(client)
        )
        self._ttls = {e: int(layout.ttl_s + EXPIRY_MARGIN_S) for e, layout in LAYOUTS.items()}

    def state_key(self, key: StateKey) -> str:
        return f"{self.prefix}:{key[0].value}:{key[1]}"

    def checkpoint_key(self, partition: int, *, labels: bool = False) -> str:
        topic = self.label_topic if labels else self.topic
        return f"{self.prefix}:ckpt:{topic}:{partition}"

    def load(self, keys: Sequence[StateKey]) -> Loaded:
        """The parts of `keys` (with the label books of merchants, devices and IPs) and all
        checkpoints, in one script call."""
        n, m = self.partitions, self.label_partitions
        checkpoints = [self.checkpoint_key(p) for p in range(n)]
        checkpoints += [self.checkpoint_key(q, labels=True) for q in range(m)]
        names = [self.state_key(k) for k in keys]
        reply = self._call(lambda: self.io.load(checkpoints, names))
        loaded = Loaded(
            PartStates(), {p: _checkpoint(reply[p]) for p in range(n)}, {},
            {q: _checkpoint(reply[n + q]) for q in range(m)},
        )  # fmt: skip
        epochs = _epochs(loaded.checkpoints)
        label_epochs = {f"L{q}".encode(): e for q, e in _epochs(loaded.label_checkpoints).items()}
        for key, fields in zip(keys, reply[n + m :], strict=True):
            parts: dict[int, list[float]] = {}
            books: list[LabelBook] = []
            for at in range(0, len(fields), 2):
                name, blob = fields[at], fields[at + 1]
                if name in label_epochs:
                    book = decode_book(blob)
                    if book is not None and book[0].epoch == label_epochs[name]:
                        books.append(book[1])
                        loaded.label_parts[(*key, int(name[1:]))] = book[1]
                    continue
                if name.startswith(b"L"):
                    continue  # a label partition's book of an older epoch
                header = part_header(blob)
                if header is None or epochs.get(int(name)) != header.epoch:
                    continue  # an older incarnation of that partition's state
                part = decode_part(key[0], blob)
                if part is not None:
                    parts[int(name)] = part
                    loaded.states.offsets[(*key, int(name))] = header.offset
            if parts:
                loaded.states[key] = parts
            if books:
                loaded.labels[key] = books[0] if len(books) == 1 else LabelBook.merged(books)
        return loaded

    def checkpoint(self, partition: int, *, labels: bool = False) -> Checkpoint | None:
        """One partition's checkpoint (input, or labels)."""
        key = self.checkpoint_key(partition, labels=labels)
        fields = self._call(lambda: self.client.hmget(key, ["offset", "epoch", "version"]))
        return _checkpoint(cast(list[bytes | None], fields))

    def checkpoints(self) -> dict[int, Checkpoint | None]:
        """Every input partition's checkpoint (one script call, no entity keys)."""
        return self.load([]).checkpoints

    def save(
        self,
        parts: Mapping[PartKey, tuple[list[float], int]],
        moves: Mapping[int, PartWrite],
        books: Mapping[BookKey, tuple[LabelBook, int]] | None = None,
        label_moves: Mapping[int, PartWrite] | None = None,
    ) -> set[int]:
        """Write `parts` (state, last offset folded in) and label `books`, and move the
        checkpoints; returns the partitions (input partitions, or label partitions when
        only `label_moves` are given) refused because their checkpoint was not the
        expected one: their parts are not written."""
        label_moves = label_moves or {}
        order = [(False, p) for p in moves] + [(True, q) for q in label_moves]
        index = {entry: i + 1 for i, entry in enumerate(order)}
        checkpoint_moves = []
        for is_label, p in order:
            move = (label_moves if is_label else moves)[p]
            checkpoint_moves.append(CheckpointMove(
                self.checkpoint_key(p, labels=is_label), move.expected.epoch,
                move.expected.offset, move.offset,
            ))  # fmt: skip
        fields: dict[StateKey, list[tuple[int, str, bytes]]] = {}
        for (entity, entity_id, partition), (state, offset) in parts.items():
            epoch = moves[partition].expected.epoch
            fields.setdefault((entity, entity_id), []).append(
                (index[(False, partition)], str(partition), encode_part(state, epoch, offset))
            )
        for (entity, entity_id, q), (book, offset) in (books or {}).items():
            epoch = label_moves[q].expected.epoch
            fields.setdefault((entity, entity_id), []).append(
                (index[(True, q)], f"L{q}", encode_book(book, epoch, offset))
            )
        writes = [
            FieldWrites(self.state_key(key), self._ttls[key[0]], written, key[0] is Entity.CARD)
            for key, written in fields.items()
        ]
        refused = self._call(lambda: self.io.save(LAYOUT_VERSION, checkpoint_moves, writes))
        return {order[int(i) - 1][1] for i in refused}

    def reset(self, partition: int, offset: int, *, labels: bool = False) -> Checkpoint:
        """Start a new epoch for `partition` at `offset`: every part it wrote before reads
        as absent from now on, and writers expecting the old checkpoint are refused."""
        key = self.checkpoint_key(partition, labels=labels)
        floor = int(time.time()) - EPOCH_ORIGIN  # above any epoch of a Redis that lost its data
        epoch = self._call(lambda: self.io.reset(key, offset, floor, LAYOUT_VERSION))
        return Checkpoint(offset, epoch)

    def _call(self, operation: Callable[[], T]) -> T:
        if not self.breaker.allow():
            raise InfrastructureUnavailable("Redis circuit open: skipping state for this batch")
        try:
            result = operation()
        except (redis.RedisError, OSError, KeysNotOnNode) as exc:
            self.breaker.failure()
            if self.on_error is not None:
                self.on_error(type(exc).__name__)
            raise InfrastructureUnavailable(f"Redis unavailable: {exc}") from exc
        self.breaker.success()
        return result


def _epochs(checkpoints: Mapping[int, Checkpoint | None]) -> dict[int, int]:
    return {p: c.epoch for p, c in checkpoints.items() if c is not None and c.current}


def _checkpoint(fields: Sequence[bytes | None]) -> Checkpoint | None:
    offset, epoch, version = fields
    if offset is None or epoch is None or version is None:
        return None
    return Checkpoint(int(offset), int(epoch), int(version))


def redis_client(url: str, timeout_ms: int, *, cluster: bool = False) -> redis.Redis:
    """A client that fails fast: millisecond timeouts, no retries (the breaker decides).
    With `cluster`, a Redis Cluster client (`url` names any node)."""
    seconds = timeout_ms / 1000
    if cluster:
        return cast(redis.Redis, RedisCluster.from_url(
            url, socket_timeout=seconds, socket_connect_timeout=seconds,
            retry_on_timeout=False, retry=Retry(NoBackoff(), 0),
        ))  # fmt: skip
    return redis.Redis.from_url(
        url, socket_timeout=seconds, socket_connect_timeout=seconds, retry_on_timeout=False,
        retry=None, health_check_interval=0,
    )  # fmt: skip
