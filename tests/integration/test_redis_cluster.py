"""The session's 3-node Redis Cluster, and how one Lua script per node runs on it.

What Redis 7.0 and redis-py 6 do, pinned here: declared KEYS of two slots are refused
(CROSSSLOT) with or without `allow-cross-slot-keys`; the flag lets a script touch keys
of several slots given in ARGV, one slot per `redis.call`, if its node owns them all; a
key of another node fails the script at that call and keeps the writes before it; and
redis-py follows MOVED for declared keys even when `target_nodes` names a node.
Uses no Kafka.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis
import redis.cluster
from redis.exceptions import ClusterCrossSlotError, ResponseError

from fraudstream import redis_nodes
from fraudstream.localstack.redis_cluster import HOST, RedisCluster, cluster_state_ok
from fraudstream.redis_nodes import KeysNotOnNode, eval_on_node, group_by_node, node_script

pytestmark = pytest.mark.integration

Client = redis.cluster.RedisCluster
FLAG = redis_nodes.CROSS_SLOT_SHEBANG
SET_ARGV = "for i = 1, #ARGV do redis.call('SET', ARGV[i], 'set') end return #ARGV"
NOT_LOCAL = "Script attempted to access a non local key"


@pytest.fixture
def client(redis_cluster: RedisCluster) -> Iterator[Client]:
    cluster_client = Client.from_url(redis_cluster.url, decode_responses=True)
    yield cluster_client
    cluster_client.close()


@pytest.fixture
def keys_by_node(client: Client, unique: Callable[[str], str]) -> dict[str, list[str]]:
    """Fresh keys grouped by owner: on every node at least two, of different slots."""
    groups: dict[str, list[str]] = {}
    while len(groups) < 3 or any(
        len({client.keyslot(k) for k in keys}) < 2 for keys in groups.values()
    ):
        for name, keys in group_by_node(client, [unique("k") for _ in range(12)]).items():
            groups.setdefault(name, []).extend(keys)
    return groups


def node_client(port: int) -> redis.Redis:
    """A plain client of one node: it answers only for the slots that node owns."""
    return redis.Redis(host=HOST, port=port, decode_responses=True)


def port_of(name: str) -> int:
    return int(name.rsplit(":", 1)[1])


def eval_raw(port: int, script: str, numkeys: int, *keys_and_args: str) -> object:
    """EVAL on one node with no cluster client in between: the server's own answer."""
    with node_client(port) as node:
        return node.execute_command("EVAL", script, numkeys, *keys_and_args)


def test_cluster_has_three_primaries_and_is_ok(redis_cluster: RedisCluster, client: Client) -> None:
    primaries = sorted(node.port for node in client.get_primaries())
    assert primaries == sorted(redis_cluster.ports)
    assert len(set(primaries)) == 3
    assert all(cluster_state_ok(port, 3) for port in redis_cluster.ports)


def test_keys_of_different_slots_land_on_their_nodes(
    redis_cluster: RedisCluster, client: Client, keys_by_node: dict[str, list[str]]
) -> None:
    assert sorted(port_of(name) for name in keys_by_node) == sorted(redis_cluster.ports)
    for keys in keys_by_node.values():
        for key in keys:
            assert client.set(key, f"v-{key}")
    for name, keys in keys_by_node.items():
        with node_client(port_of(name)) as owner:
            assert [owner.get(key) for key in keys] == [f"v-{key}" for key in keys]
        assert [client.get(key) for key in keys] == [f"v-{key}" for key in keys]


def test_declared_keys_of_two_slots_are_refused_even_with_the_flag(
    keys_by_node: dict[str, list[str]],
) -> None:
    name, keys = next(iter(keys_by_node.items()))
    for script in (f"{FLAG}\nreturn 1", "#!lua\nreturn 1", "return 1"):
        with pytest.raises(ClusterCrossSlotError):
            eval_raw(port_of(name), script, len(keys), *keys)


def test_flag_lets_a_script_touch_keys_of_two_slots_on_its_node(
    keys_by_node: dict[str, list[str]],
) -> None:
    for name, keys in keys_by_node.items():
        assert eval_raw(port_of(name), f"{FLAG}\n{SET_ARGV}", 0, *keys) == len(keys)
        with node_client(port_of(name)) as owner:
            assert [owner.get(key) for key in keys] == ["set"] * len(keys)


def test_shebang_without_the_flag_refuses_two_slots_and_legacy_eval_allows_them(
    keys_by_node: dict[str, list[str]],
) -> None:
    name, keys = next(iter(keys_by_node.items()))
    with pytest.raises(ResponseError, match="do not hash to the same slot"):
        eval_raw(port_of(name), f"#!lua\n{SET_ARGV}", 0, *keys)
    assert eval_raw(port_of(name), SET_ARGV, 0, *keys) == len(keys)  # pre-7 scripts


def test_flagged_script_refuses_a_key_of_another_node_and_keeps_earlier_writes(
    keys_by_node: dict[str, list[str]],
) -> None:
    (name, keys), (_, foreign) = list(keys_by_node.items())[:2]
    with pytest.raises(ResponseError, match=NOT_LOCAL):
        eval_raw(port_of(name), f"{FLAG}\n{SET_ARGV}", 0, keys[0], foreign[0])
    with node_client(port_of(name)) as owner:
        assert owner.get(keys[0]) == "set"  # no rollback: the first SET stays


def test_one_call_over_two_slots_is_refused_inside_a_flagged_script(
    keys_by_node: dict[str, list[str]],
) -> None:
    name, keys = next(iter(keys_by_node.items()))
    with pytest.raises(ResponseError, match=NOT_LOCAL):
        eval_raw(port_of(name), f"{FLAG}\nreturn redis.call('MGET', unpack(ARGV))", 0, *keys)


def test_redis_py_follows_moved_for_declared_keys_despite_target_nodes(
    client: Client, keys_by_node: dict[str, list[str]]
) -> None:
    (name, _), (foreign_name, foreign) = list(keys_by_node.items())[:2]
    target = client.get_node(node_name=name)
    script = "redis.call('SET', KEYS[1], 'moved') return 1"
    assert client.execute_command("EVAL", script, 1, foreign[0], target_nodes=target) == 1
    with node_client(port_of(foreign_name)) as owner:
        assert owner.get(foreign[0]) == "moved"  # ran on the owner, not on `target`


def test_eval_on_node_runs_one_script_per_node_over_its_keys(
    client: Client, keys_by_node: dict[str, list[str]], unique: Callable[[str], str]
) -> None:
    body = (
        f"-- {unique('script')}\n"
        "for i, key in ipairs(NODE_KEYS) do redis.call('INCRBY', key, NODE_ARGS[1]) end\n"
        "return {#NODE_KEYS, NODE_ARGS[2]}"
    )
    script = node_script(body)
    every_key = [key for keys in keys_by_node.values() for key in keys]
    for name, keys in group_by_node(client, every_key).items():
        assert eval_on_node(client, name, script, keys, (5, "tag")) == [len(keys), "tag"]
        assert eval_on_node(client, name, script, keys, (2, "again")) == [len(keys), "again"]
    assert [client.get(key) for key in every_key] == ["7"] * len(every_key)
    sha = redis_nodes.script_sha(script)
    for name in keys_by_node:  # EVAL after NOSCRIPT cached it on each node
        with node_client(port_of(name)) as node:
            assert node.script_exists(sha) == [True]


def test_eval_on_node_cached_only_where_it_ran(
    client: Client, keys_by_node: dict[str, list[str]], unique: Callable[[str], str]
) -> None:
    (name, keys), (other, _) = list(keys_by_node.items())[:2]
    script = node_script(f"-- {unique('script')}\nreturn #NODE_KEYS")
    assert eval_on_node(client, name, script, keys) == len(keys)
    sha = redis_nodes.script_sha(script)
    with node_client(port_of(name)) as ran, node_client(port_of(other)) as idle:
        assert (ran.script_exists(sha), idle.script_exists(sha)) == ([True], [False])


@pytest.mark.parametrize(("check_keys_first", "local_written"), [(True, None), (False, "set")])
def test_eval_on_node_refuses_a_foreign_key(
    client: Client,
    keys_by_node: dict[str, list[str]],
    check_keys_first: bool,
    local_written: str | None,
) -> None:
    (name, keys), (_, foreign) = list(keys_by_node.items())[:2]
    body = "for i, key in ipairs(NODE_KEYS) do redis.call('SET', key, 'set') end return 1"
    script = node_script(body, check_keys_first=check_keys_first)
    with pytest.raises(KeysNotOnNode, match="group the keys again"):
        eval_on_node(client, name, script, [keys[0], foreign[0]])
    assert client.get(keys[0]) == local_written  # the check keeps a failed script write-free
    assert client.get(foreign[0]) is None


def test_eval_on_node_refuses_an_unknown_node(client: Client) -> None:
    with pytest.raises(KeysNotOnNode, match="not a node"):
        eval_on_node(client, f"{HOST}:1", node_script("return 1"), [])
