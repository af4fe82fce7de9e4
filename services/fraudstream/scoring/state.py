"""The scorer's Redis state: entity states plus a memo per transaction, behind a breaker.

One Lua script call reads a batch's entity states and the memos of its transaction ids;
another writes the new states and memos together (a script is atomic, in memory and in
the AOF), so after a crash either both or neither exist. A memo holds the decision already
produced for a transaction and the input offset it came from: a replay of that offset
re-emits the same decision and counts nothing twice; the same id at another offset is a
duplicate. Writes are fenced per input partition (see `_LOAD`), so a zombie instance
cannot overwrite state its successor owns, and each partition's high-water mark of saved
offsets reveals state that Redis lost after Kafka committed it.

Redis calls use millisecond timeouts and no retries; repeated failures open a circuit
breaker so a slow or dead Redis costs one fast check per batch, not a timeout per batch.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import redis

from fraudstream.errors import FraudStreamError, InfrastructureUnavailable
from fraudstream.features.pipeline import StateCache, StateKey
from fraudstream.features.state import DAY, LAYOUTS, decode_state, encode_state

T = TypeVar("T")
_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Memo:
    """What was emitted for a transaction, and from which input position."""

    partition: int
    offset: int
    outputs: tuple[tuple[str, bytes | None, bytes], ...]  # (topic role, key, value)

    def encode(self) -> bytes:
        """Length-prefixed binary: header, then per output its role, key and value."""
        parts = [_MEMO_HEAD.pack(self.partition, self.offset, len(self.outputs))]
        for role, key, value in self.outputs:
            parts.append(_MEMO_ITEM.pack(_ROLES.index(role), -1 if key is None else len(key),
                                         len(value)))  # fmt: skip
            parts += (key or b"", value)
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> Memo:
        partition, offset, count = _MEMO_HEAD.unpack_from(data)
        at = _MEMO_HEAD.size
        outputs = []
        for _ in range(count):
            role, key_len, value_len = _MEMO_ITEM.unpack_from(data, at)
            at += _MEMO_ITEM.size
            key = None if key_len < 0 else data[at : at + key_len]
            at += max(key_len, 0)
            outputs.append((_ROLES[role], key, data[at : at + value_len]))
            at += value_len
        return cls(partition, offset, tuple(outputs))


_MEMO_HEAD = struct.Struct("<iqB")  # partition, offset, number of outputs
_MEMO_ITEM = struct.Struct("<Bii")  # role, key length (-1: no key), value length
DECISIONS, REVIEW, DLQ = "decisions", "review", "dlq"  # topic roles of the outputs
_ROLES = (DECISIONS, REVIEW, DLQ)


class CircuitBreaker:
    """Closed -> open after `failures` consecutive errors; half-open after `cooldown_s`."""

    CLOSED, HALF_OPEN, OPEN = 0, 1, 2

    def __init__(
        self,
        failures: int = 3,
        cooldown_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._consecutive = 0
        self._opened_at: float | None = None

    @property
    def state(self) -> int:
        if self._opened_at is None:
            return self.CLOSED
        if self.clock() - self._opened_at >= self.cooldown_s:
            return self.HALF_OPEN
        return self.OPEN

    def allow(self) -> bool:
        return self.state != self.OPEN

    def success(self) -> None:
        self._consecutive = 0
        self._opened_at = None

    def failure(self) -> None:
        self._consecutive += 1
        if self._consecutive >= self.failures or self.state == self.HALF_OPEN:
            self._opened_at = self.clock()


# Fences: `<prefix>:fence:<topic>:<partition>` is a hash {token, hwm}. An instance claims
# a partition on its first read after an assignment (token + 1) and every write it makes
# for that partition must carry the token it got: a zombie (an instance that lost the
# partition without noticing) holds an older token and its writes are refused. A token
# lower than ours, or none, means Redis lost its data: we claim again. `hwm` is the highest
# input offset whose state was saved: a restart that finds the consumer's position beyond
# it knows Redis lost writes that Kafka had committed.
# ARGV: n_fences, then our token per fence ('' = none yet). KEYS: fences, then keys to read.
# Returns (token, hwm or -1, 1 if claimed now else 0) per fence, then the values (nil when
# missing).
_LOAD = """
local n = tonumber(ARGV[1])
local out = {}
for i = 1, n do
  local token = tonumber(redis.call('HGET', KEYS[i], 'token') or 0)
  local mine = tonumber(ARGV[1 + i])
  local claimed = 0
  if mine == nil or token < mine then
    token = math.max(token, mine or 0) + 1
    redis.call('HSET', KEYS[i], 'token', token)
    claimed = 1
  end
  out[#out + 1] = token
  out[#out + 1] = tonumber(redis.call('HGET', KEYS[i], 'hwm') or -1)
  out[#out + 1] = claimed
end
local first = n + 1
while first <= #KEYS do
  local last = math.min(first + 999, #KEYS)
  local values = redis.call('MGET', unpack(KEYS, first, last))
  for j = 1, #values do out[#out + 1] = values[j] end
  first = last + 1
end
return out
"""
# ARGV: n_fences, n_states, (token, last offset) per fence, (value, ttl) per state, memo
# TTL, then one value per memo. KEYS: fences, states, memos. Nothing is written unless
# every fence still holds the caller's token; returns -1 - i when fence i refused, else 0.
_SAVE = """
local n, m = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 1, n do
  if redis.call('HGET', KEYS[i], 'token') ~= ARGV[1 + 2 * i] then return -i end
end
for i = 1, n do
  local offset = tonumber(ARGV[2 + 2 * i])
  if offset > tonumber(redis.call('HGET', KEYS[i], 'hwm') or -1) then
    redis.call('HSET', KEYS[i], 'hwm', offset)
  end
end
local a = 3 + 2 * n
for i = n + 1, n + m do
  redis.call('SET', KEYS[i], ARGV[a], 'EX', ARGV[a + 1])
  a = a + 2
end
local memo_ttl = ARGV[a]
for i = n + m + 1, #KEYS do
  a = a + 1
  redis.call('SET', KEYS[i], ARGV[a], 'EX', memo_ttl)
end
return 0
"""

Partition = tuple[str, int]  # (topic, partition)


class StateFenced(FraudStreamError):
    """Another instance claimed a partition of this batch: its state must not be written."""


@dataclass
class Loaded:
    """What one read returned: entity states, memos, and per-partition state gaps."""

    states: StateCache
    memos: dict[str, Memo]
    gaps: dict[Partition, int]  # input offsets Kafka committed whose state Redis lacks


class ScorerState:
    """Batch reads and atomic writes of entity states and transaction memos (one script
    each per batch), fenced per input partition."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "fs",
        memo_ttl_s: int = 300,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.memo_ttl_s = memo_ttl_s
        self.breaker = breaker or CircuitBreaker()
        self._load = client.register_script(_LOAD)
        self._save = client.register_script(_SAVE)
        self._tokens: dict[Partition, int] = {}
        self._ttls = {entity: int(layout.ttl_s + DAY) for entity, layout in LAYOUTS.items()}

    def state_key(self, key: StateKey) -> str:
        return f"{self.prefix}:{key[0].value}:{key[1]}"

    def memo_key(self, transaction_id: str) -> str:
        return f"{self.prefix}:tx:{transaction_id}"

    def fence_key(self, partition: Partition) -> str:
        return f"{self.prefix}:fence:{partition[0]}:{partition[1]}"

    def release(self, partitions: Iterable[Partition]) -> None:
        """Forget the tokens of assigned or revoked partitions: the next read claims them
        again. Only a rebalance does this; a fenced instance stays fenced until then."""
        for partition in partitions:
            self._tokens.pop(partition, None)

    def load(
        self,
        keys: Sequence[StateKey],
        transaction_ids: Sequence[str],
        first_offsets: Mapping[Partition, int],
    ) -> Loaded:
        """States (empty when unknown), existing memos and state gaps, in one script call.

        `first_offsets` are the batch's first input offset per partition; a partition read
        for the first time since its assignment is claimed, and compared with the offset
        up to which its state was saved.
        """
        fences = list(first_offsets)
        names = [self.fence_key(p) for p in fences]
        names += [self.state_key(k) for k in keys]
        names += [self.memo_key(t) for t in transaction_ids]
        tokens = [str(self._tokens.get(p, "")) for p in fences]
        reply = self._call(lambda: cast(list[Any], self._load(names, [len(fences), *tokens])))
        gaps: dict[Partition, int] = {}
        for i, partition in enumerate(fences):
            token, hwm, claimed = (int(v) for v in reply[3 * i : 3 * i + 3])
            if not claimed and token != self._tokens[partition]:
                raise StateFenced(f"partition {partition} was claimed by another instance")
            if claimed and partition in self._tokens:
                _log.error("the state fence of %s vanished: Redis lost its data", partition)
            self._tokens[partition] = token
            first = first_offsets[partition]
            # +1: an input topic written transactionally has a commit marker after a batch.
            if claimed and hwm >= 0 and first > hwm + 2:
                gaps[partition] = first - hwm - 1
            elif claimed and hwm < 0 and first > 0:
                _log.warning("no state saved for %s before offset %d: a new deployment, or "
                             "Redis lost its data", partition, first)  # fmt: skip
        blobs = reply[3 * len(fences) :]
        states = StateCache()
        for key, blob in zip(keys, blobs[: len(keys)], strict=True):
            states[key] = decode_state(key[0], blob)
        memos = {
            tx_id: Memo.decode(blob)
            for tx_id, blob in zip(transaction_ids, blobs[len(keys) :], strict=True)
            if blob is not None
        }
        return Loaded(states, memos, gaps)

    def save(
        self, states: StateCache, memos: dict[str, Memo], last_offsets: Mapping[Partition, int]
    ) -> None:
        """Write states and memos atomically, each with its TTL, and move the partitions'
        high-water marks; raises `StateFenced` (writing nothing) if a partition was claimed
        by another instance since this one read it."""
        fences = list(last_offsets)
        keys = [self.fence_key(p) for p in fences]
        args: list[Any] = [len(fences), len(states)]
        for partition in fences:
            args += [self._tokens.get(partition, ""), last_offsets[partition]]
        for key, state in states.items():
            keys.append(self.state_key(key))
            args += [encode_state(state), self._ttls[key[0]]]
        args.append(self.memo_ttl_s)
        for tx_id, memo in memos.items():
            keys.append(self.memo_key(tx_id))
            args.append(memo.encode())
        refused = int(self._call(lambda: cast(int, self._save(keys, args))))
        if refused < 0:
            partition = fences[-refused - 1]
            raise StateFenced(f"state of partition {partition} is owned by another instance")

    def _call(self, operation: Callable[[], T]) -> T:
        if not self.breaker.allow():
            raise InfrastructureUnavailable("Redis circuit open: skipping state for this batch")
        try:
            result = operation()
        except (redis.RedisError, OSError) as exc:
            self.breaker.failure()
            raise InfrastructureUnavailable(f"Redis unavailable: {exc}") from exc
        self.breaker.success()
        return result


def redis_client(url: str, timeout_ms: int) -> redis.Redis:
    """A client that fails fast: millisecond timeouts, no retries (the breaker decides)."""
    seconds = timeout_ms / 1000
    return redis.Redis.from_url(
        url, socket_timeout=seconds, socket_connect_timeout=seconds, retry_on_timeout=False,
        retry=None, health_check_interval=0,
    )  # fmt: skip
