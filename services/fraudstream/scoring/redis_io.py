"""The scorer state's Redis round trips, on one node or on a Redis Cluster.

One node: a batch is one read script and one write script; the write moves the
checkpoints and writes the parts that belong to the moved ones atomically.

A cluster cannot run one script over keys of many slots, so each primary runs its share
(`fraudstream.redis_nodes`): reads go node by node; a write first stores the parts, each
only if it is newer than what the field holds (by epoch, then offset: the same value at
the same offset is the same bytes, whoever computes it), card parts after the others,
and only then moves the checkpoints, each by compare-and-set. A crash in between leaves
parts ahead of their checkpoint, never behind: the catch-up replay skips what a part
already holds (`features.pipeline.fold_parts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import redis
from redis.cluster import RedisCluster

from fraudstream.redis_nodes import eval_on_node, node_script

# KEYS: n checkpoints, then entity keys. Returns per checkpoint {offset, epoch, version}
# (false when missing), then per entity key its fields and values.
_LOAD = """
local n = tonumber(ARGV[1])
local out = {}
for i = 1, n do
  out[i] = redis.call('HMGET', KEYS[i], 'offset', 'epoch', 'version')
end
for i = n + 1, #KEYS do
  out[i] = redis.call('HGETALL', KEYS[i])
end
return out
"""
# KEYS: the checkpoints to move, then entity keys. ARGV: n checkpoints, layout version,
# per checkpoint (epoch, expected offset, new offset), per entity key (ttl, number of
# fields, then (checkpoint index, field, value) triples). A checkpoint that is not exactly
# the expected one moves nothing, and the fields that belong to it are not written;
# returns the indexes of those checkpoints.
_SAVE = """
local n, version = tonumber(ARGV[1]), ARGV[2]
local ok, refused, a = {}, {}, 3
for i = 1, n do
  local epoch, expected, new = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  a = a + 3
  local cur = redis.call('HMGET', KEYS[i], 'offset', 'epoch', 'version')
  if cur[1] == expected and cur[2] == epoch and cur[3] == version then
    ok[i] = true
    redis.call('HSET', KEYS[i], 'offset', new)
  else
    refused[#refused + 1] = i
  end
end
for k = n + 1, #KEYS do
  local ttl, m, wrote = ARGV[a], tonumber(ARGV[a + 1]), false
  a = a + 2
  for _ = 1, m do
    if ok[tonumber(ARGV[a])] then
      redis.call('HSET', KEYS[k], ARGV[a + 1], ARGV[a + 2])
      wrote = true
    end
    a = a + 3
  end
  if wrote then redis.call('EXPIRE', KEYS[k], ttl) end
end
return refused
"""
# KEYS: one checkpoint. ARGV: offset, the lowest epoch to use, layout version. The new
# epoch is above the old one (so a part's epoch orders its writers) and returned.
_RESET = """
local old = tonumber(redis.call('HGET', KEYS[1], 'epoch') or 0)
local epoch = math.max(old + 1, tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'offset', ARGV[1], 'epoch', epoch, 'version', ARGV[3])
return epoch
"""
# Per node, keys in ARGV. NODE_ARGS: per key (ttl, number of fields, (field, value)...).
# A field is written only if its stored value is absent, of another layout, or older
# (a lower epoch, or the same epoch and a lower offset); the header is <BIi8.
_WRITE_PARTS = """
local a = 1
for k = 1, #NODE_KEYS do
  local key, ttl, m, wrote = NODE_KEYS[k], NODE_ARGS[a], tonumber(NODE_ARGS[a + 1]), false
  a = a + 2
  for _ = 1, m do
    local field, value = NODE_ARGS[a], NODE_ARGS[a + 1]
    a = a + 2
    local old = redis.call('HGET', key, field)
    local newer = true
    if old and #old >= 13 then
      local v0, e0, o0 = struct.unpack('<BIi8', old)
      local v1, e1, o1 = struct.unpack('<BIi8', value)
      newer = v0 ~= v1 or e1 > e0 or (e1 == e0 and o1 > o0)
    end
    if newer then
      redis.call('HSET', key, field, value)
      wrote = true
    end
  end
  if wrote then redis.call('EXPIRE', key, ttl) end
end
return 0
"""
# Per node, keys in ARGV. NODE_ARGS: layout version, then per checkpoint (index, epoch,
# expected, new). Returns the indexes of the checkpoints that were not as expected.
_MOVE_CHECKPOINTS = """
local version, refused, a = NODE_ARGS[1], {}, 2
for k = 1, #NODE_KEYS do
  local index, epoch, expected, new = NODE_ARGS[a], NODE_ARGS[a + 1], NODE_ARGS[a + 2],
    NODE_ARGS[a + 3]
  a = a + 4
  local cur = redis.call('HMGET', NODE_KEYS[k], 'offset', 'epoch', 'version')
  if cur[1] == expected and cur[2] == epoch and cur[3] == version then
    redis.call('HSET', NODE_KEYS[k], 'offset', new)
  else
    refused[#refused + 1] = tonumber(index)
  end
end
return refused
"""
_NODE_LOAD = """
local n, out = tonumber(NODE_ARGS[1]), {}
for i = 1, #NODE_KEYS do
  if i <= n then
    out[i] = redis.call('HMGET', NODE_KEYS[i], 'offset', 'epoch', 'version')
  else
    out[i] = redis.call('HGETALL', NODE_KEYS[i])
  end
end
return out
"""


@dataclass(frozen=True)
class CheckpointMove:
    """Move `key` from `expected` to `new` if it holds `epoch` (1-based `index` in replies)."""

    key: str
    epoch: int
    expected: int
    new: int


@dataclass(frozen=True)
class FieldWrites:
    """Fields of one entity key: (checkpoint index, field, value), with the key's TTL."""

    key: str
    ttl: int
    fields: list[tuple[int, str, bytes]]
    last: bool = False  # card keys: written after the others on a cluster


class StateIO(Protocol):
    """The round trips `ScorerState` makes."""

    def load(self, checkpoints: Sequence[str], keys: Sequence[str]) -> list[Any]: ...

    def save(
        self, version: int, moves: Sequence[CheckpointMove], writes: Sequence[FieldWrites]
    ) -> list[int]: ...

    def reset(self, key: str, offset: int, floor_epoch: int, version: int) -> int: ...


class SingleNode:
    """One Redis: one atomic script per batch read and per batch write."""

    def __init__(self, client: redis.Redis) -> None:
        self._load = client.register_script(_LOAD)
        self._save = client.register_script(_SAVE)
        self._reset = client.register_script(_RESET)

    def load(self, checkpoints: Sequence[str], keys: Sequence[str]) -> list[Any]:
        return cast(list[Any], self._load([*checkpoints, *keys], [len(checkpoints)]))

    def save(
        self, version: int, moves: Sequence[CheckpointMove], writes: Sequence[FieldWrites]
    ) -> list[int]:
        names = [m.key for m in moves]
        args: list[Any] = [len(moves), version]
        for m in moves:
            args += [m.epoch, m.expected, m.new]
        for w in writes:
            names.append(w.key)
            args += [w.ttl, len(w.fields)]
            for triple in w.fields:
                args += triple
        return [int(i) for i in cast(list[int], self._save(names, args))]

    def reset(self, key: str, offset: int, floor_epoch: int, version: int) -> int:
        return int(cast(int, self._reset([key], [offset, floor_epoch, version])))


class ClusterNodes:
    """A Redis Cluster: each primary runs a script over the keys it owns."""

    def __init__(self, client: RedisCluster) -> None:
        self.client = client
        self._load = node_script(_NODE_LOAD, check_keys_first=False)
        self._write = node_script(_WRITE_PARTS)
        self._move = node_script(_MOVE_CHECKPOINTS)

    def load(self, checkpoints: Sequence[str], keys: Sequence[str]) -> list[Any]:
        names = [*checkpoints, *keys]
        n = len(checkpoints)
        replies: dict[int, Any] = {}
        for node, indexes in self._group(names).items():
            ckpts = [i for i in indexes if i < n]
            rest = [i for i in indexes if i >= n]
            ordered = [*ckpts, *rest]
            reply = eval_on_node(self.client, node, self._load, [names[i] for i in ordered],
                                 [len(ckpts)])  # fmt: skip
            replies.update(zip(ordered, reply, strict=True))
        return [replies[i] for i in range(len(names))]

    def save(
        self, version: int, moves: Sequence[CheckpointMove], writes: Sequence[FieldWrites]
    ) -> list[int]:
        for last in (False, True):  # card parts after the others (see the module doc)
            chosen = [w for w in writes if w.last is last]
            by_node = self._group([w.key for w in chosen])
            for node, indexes in by_node.items():
                args: list[Any] = []
                for i in indexes:
                    w = chosen[i]
                    args += [w.ttl, len(w.fields)]
                    for _index, field, value in w.fields:
                        args += [field, value]
                eval_on_node(self.client, node, self._write, [chosen[i].key for i in indexes],
                             args)  # fmt: skip
        refused: list[int] = []
        for node, indexes in self._group([m.key for m in moves]).items():
            args = [version]
            for i in indexes:
                m = moves[i]
                args += [i + 1, m.epoch, m.expected, m.new]
            reply = eval_on_node(self.client, node, self._move, [moves[i].key for i in indexes],
                                 args)  # fmt: skip
            refused += [int(r) for r in reply]
        return refused

    def reset(self, key: str, offset: int, floor_epoch: int, version: int) -> int:
        client = cast(Any, self.client)  # redis-py types eval for Redis only
        return int(client.eval(_RESET, 1, key, offset, floor_epoch, version))

    def _group(self, keys: Sequence[str]) -> dict[str, list[int]]:
        """Indexes of `keys` by the node owning each."""
        out: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            out.setdefault(str(self.client.get_node_from_key(key).name), []).append(i)
        return out
