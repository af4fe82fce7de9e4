"""The scorer's Redis state: entity states plus a memo per transaction, behind a breaker.

One round trip reads a batch's entity states and the memos of its transaction ids; one
MULTI/EXEC writes the new states and memos together, so after a crash either both or
neither exist. A memo holds the decision already produced for a transaction and the input
offset it came from: a replay of that offset re-emits the same decision and counts
nothing twice; the same id at another offset is a duplicate.

Redis calls use millisecond timeouts and no retries; repeated failures open a circuit
breaker so a slow or dead Redis costs one fast check per batch, not a timeout per batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar, cast

import orjson
import redis

from fraudstream.errors import InfrastructureUnavailable
from fraudstream.features.pipeline import StateCache, StateKey
from fraudstream.features.state import DAY, LAYOUTS, decode_state, encode_state

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Memo:
    """What was emitted for a transaction, and from which input position."""

    partition: int
    offset: int
    outputs: tuple[tuple[str, bytes | None, bytes], ...]  # (topic role, key, value)

    def encode(self) -> bytes:
        return orjson.dumps(
            {"p": self.partition, "o": self.offset,
             "out": [[role, key.decode() if key else None, value.decode()]
                     for role, key, value in self.outputs]}
        )  # fmt: skip

    @classmethod
    def decode(cls, data: bytes) -> Memo:
        raw = orjson.loads(data)
        outputs = tuple(
            (role, key.encode() if key is not None else None, value.encode())
            for role, key, value in raw["out"]
        )
        return cls(int(raw["p"]), int(raw["o"]), outputs)


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


class ScorerState:
    """Batch reads and atomic writes of entity states and transaction memos."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "fs",
        memo_ttl_s: int = 8 * 24 * 3600,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.memo_ttl_s = memo_ttl_s
        self.breaker = breaker or CircuitBreaker()

    def state_key(self, key: StateKey) -> str:
        return f"{self.prefix}:{key[0].value}:{key[1]}"

    def memo_key(self, transaction_id: str) -> str:
        return f"{self.prefix}:tx:{transaction_id}"

    def load(
        self, keys: Sequence[StateKey], transaction_ids: Sequence[str]
    ) -> tuple[StateCache, dict[str, Memo]]:
        """States (empty when unknown) and existing memos, in one MGET."""
        names = [self.state_key(k) for k in keys] + [self.memo_key(t) for t in transaction_ids]
        blobs = self._call(lambda: cast(list[bytes | None], self.client.mget(names)))
        states = StateCache()
        for key, blob in zip(keys, blobs[: len(keys)], strict=True):
            states[key] = decode_state(key[0], blob)
        memos = {
            tx_id: Memo.decode(blob)
            for tx_id, blob in zip(transaction_ids, blobs[len(keys) :], strict=True)
            if blob is not None
        }
        return states, memos

    def save(self, states: StateCache, memos: dict[str, Memo]) -> None:
        """Write states and memos atomically (MULTI/EXEC), each with its TTL."""

        def write() -> None:
            pipe = self.client.pipeline(transaction=True)
            for key, state in states.items():
                ttl = int(LAYOUTS[key[0]].ttl_s + DAY)
                pipe.set(self.state_key(key), encode_state(state), ex=ttl)
            for tx_id, memo in memos.items():
                pipe.set(self.memo_key(tx_id), memo.encode(), ex=self.memo_ttl_s)
            pipe.execute()

        self._call(write)

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
