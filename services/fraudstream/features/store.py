"""Entity states in Redis: one read and one write round trip per batch.

Key layout: `<prefix>:<entity>:<id>` -> the state vector as little-endian float64 bytes,
with the entity's TTL (a little over its logical TTL, which `compute.advance` enforces in
event time). The scorer issue adds idempotency per transaction id on top of this.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import redis

from fraudstream.errors import InfrastructureUnavailable
from fraudstream.features.pipeline import StateCache, StateKey
from fraudstream.features.state import DAY, LAYOUTS, decode_state, encode_state


class RedisStateStore:
    """Loads and saves the entity states a batch touches."""

    def __init__(self, client: redis.Redis, prefix: str = "fs") -> None:
        self.client = client
        self.prefix = prefix

    def key(self, state_key: StateKey) -> str:
        entity, entity_id = state_key
        return f"{self.prefix}:{entity.value}:{entity_id}"

    def load(self, keys: Iterable[StateKey]) -> StateCache:
        """States for `keys` (empty for unknown ones) in one MGET."""
        wanted = list(dict.fromkeys(keys))
        cache = StateCache()
        if not wanted:
            return cache
        try:
            blobs = cast(list[bytes | None], self.client.mget([self.key(k) for k in wanted]))
        except redis.RedisError as exc:
            raise InfrastructureUnavailable(f"Redis read failed: {exc}") from exc
        for state_key, blob in zip(wanted, blobs, strict=True):
            cache[state_key] = decode_state(state_key[0], blob)
        return cache

    def save(self, states: StateCache) -> None:
        """Write every state back with its TTL in one pipelined round trip."""
        pipe = self.client.pipeline(transaction=False)
        for state_key, state in states.items():
            ttl = int(LAYOUTS[state_key[0]].ttl_s + DAY)
            pipe.set(self.key(state_key), encode_state(state), ex=ttl)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            raise InfrastructureUnavailable(f"Redis write failed: {exc}") from exc
