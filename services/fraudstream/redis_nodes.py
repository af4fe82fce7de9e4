"""One Lua script per Redis Cluster primary over keys of many slots that it owns.

Redis 7 refuses declared KEYS of different slots (CROSSSLOT) even with the
`allow-cross-slot-keys` flag; the flag only lets a script touch, one slot per
`redis.call`, keys it gets some other way, all owned by the node it runs on. So a
node's keys travel in ARGV (`numkeys` 0) and `eval_on_node` sends the script to that
node by name. A key the node does not own (its slot moved since `group_by_node`) fails
the script at the `redis.call` that touches it, keeping earlier writes: `node_script`
therefore touches every key with a read before `body` runs, unless told not to.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from fraudstream.errors import FraudStreamError

CROSS_SLOT_SHEBANG = "#!lua flags=allow-cross-slot-keys"

# ARGV is `#keys, keys..., args...`; these locals give `body` the two parts.
_PRELUDE = """\
local NODE_KEYS, NODE_ARGS = {}, {}
local node_key_count = tonumber(ARGV[1])
for i = 1, node_key_count do NODE_KEYS[i] = ARGV[i + 1] end
for i = node_key_count + 2, #ARGV do NODE_ARGS[#NODE_ARGS + 1] = ARGV[i] end
"""
# ~1 us a key on Redis 7.0; scripts that read every key before writing can skip it.
_CHECK_KEYS = "for i = 1, node_key_count do redis.call('EXISTS', NODE_KEYS[i]) end\n"

_NOT_LOCAL = "Script attempted to access a non local key"

Arg = str | bytes | int | float
K = TypeVar("K")


class KeysNotOnNode(FraudStreamError):
    """A script touched a key its node does not own: the slot map changed under us."""


def node_script(body: str, *, check_keys_first: bool = True) -> str:
    """`body` as a per-node script: cross-slot shebang, NODE_KEYS/NODE_ARGS, key check."""
    if body.startswith("#!"):
        raise ValueError("give node_script the body only: it writes the shebang itself")
    check = _CHECK_KEYS if check_keys_first else ""
    return f"{CROSS_SLOT_SHEBANG}\n{_PRELUDE}{check}{body}"


def script_sha(script: str) -> str:
    """The SHA1 Redis names `script` by in its script cache (EVALSHA, SCRIPT EXISTS)."""
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


def group_by(keys: Iterable[K], owner: Callable[[K], str]) -> dict[str, list[K]]:
    """`keys` grouped by `owner(key)`, groups and keys in first-seen order, repeats kept."""
    groups: dict[str, list[K]] = {}
    for key in keys:
        groups.setdefault(owner(key), []).append(key)
    return groups


def group_by_node(client: RedisCluster, keys: Iterable[str]) -> dict[str, list[str]]:
    """`keys` by the name (`host:port`) of the primary owning each key's slot, per `client`."""
    return group_by(keys, lambda key: str(client.get_node_from_key(key).name))


def eval_on_node(
    client: RedisCluster,
    node_name: str,
    script: str,
    keys: Sequence[str],
    args: Sequence[Arg] = (),
) -> Any:
    """Run a `node_script` on the node `node_name` with `keys` and `args`; its reply.

    EVALSHA first, EVAL (which caches the script on that node) when the node lacks it.
    Raises KeysNotOnNode, after refreshing `client`'s slot map, when a key is not the
    node's: group the keys again and retry.
    """
    node = client.get_node(node_name=node_name)
    if node is None:
        raise KeysNotOnNode(f"{node_name} is not a node of the cluster: group the keys again")
    argv = (len(keys), *keys, *args)
    sha = script_sha(script)
    try:
        try:
            return client.execute_command("EVALSHA", sha, 0, *argv, target_nodes=node)
        except NoScriptError:
            return client.execute_command("EVAL", script, 0, *argv, target_nodes=node)
    except ResponseError as exc:
        if _NOT_LOCAL not in str(exc):
            raise
        client.nodes_manager.initialize()
        raise KeysNotOnNode(
            f"a key sent to {node_name} lives on another node now: group the keys again"
        ) from exc
