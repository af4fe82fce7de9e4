"""Block and allow lists in Redis: one set per (list, entity kind), checked once per batch.

Key layout: `<prefix>:<list>:<entity>` -> Redis set of ids (card tokens, merchant ids,
device ids, IPs, BINs, country codes). Managed with `fraudctl lists ...`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

import redis

from fraudstream.contracts import Transaction
from fraudstream.errors import InfrastructureUnavailable
from fraudstream.rules.context import ListHits, entity_value
from fraudstream.rules.model import ListEntity, ListName

MAX_LIST_VALUE = 64


class RedisLists:
    """Membership checks for a batch in one round trip, plus list management."""

    def __init__(self, client: redis.Redis, prefix: str = "fraud:list") -> None:
        self.client = client
        self.prefix = prefix

    def key(self, name: ListName, entity: ListEntity) -> str:
        return f"{self.prefix}:{name.value}:{entity.value}"

    def hits(self, txs: Sequence[Transaction]) -> ListHits:
        """Which of the batch's ids are on which list (SMISMEMBER per list, pipelined)."""
        pairs = [(name, entity) for name in ListName for entity in ListEntity]
        values = {
            entity: sorted({v for tx in txs if (v := entity_value(tx, entity.value)) is not None})
            for entity in ListEntity
        }
        pipe = self.client.pipeline(transaction=False)
        asked = [(n, e) for n, e in pairs if values[e]]
        for name, entity in asked:
            pipe.smismember(self.key(name, entity), values[entity])
        try:
            answers = cast(list[list[int]], pipe.execute())
        except redis.RedisError as exc:
            raise InfrastructureUnavailable(f"Redis list check failed: {exc}") from exc
        return {
            (name.value, entity.value): frozenset(
                v for v, member in zip(values[entity], found, strict=True) if member
            )
            for (name, entity), found in zip(asked, answers, strict=True)
        }

    def add(self, name: ListName, entity: ListEntity, items: Iterable[str]) -> int:
        cleaned = _clean(items)
        return int(cast(int, self.client.sadd(self.key(name, entity), *cleaned)))

    def remove(self, name: ListName, entity: ListEntity, items: Iterable[str]) -> int:
        cleaned = _clean(items)
        return int(cast(int, self.client.srem(self.key(name, entity), *cleaned)))

    def members(self, name: ListName, entity: ListEntity) -> list[str]:
        raw = cast(set[bytes], self.client.smembers(self.key(name, entity)))
        return sorted(m.decode() for m in raw)


def _clean(items: Iterable[str]) -> list[str]:
    cleaned = [item.strip() for item in items if item.strip()]
    if not cleaned:
        raise ValueError("give at least one id")
    too_long = [item for item in cleaned if len(item) > MAX_LIST_VALUE]
    if too_long:
        raise ValueError(f"ids longer than {MAX_LIST_VALUE} characters: {too_long[:3]}")
    return cleaned
