"""The state path on a real local 3-node Redis Cluster: per-node scripts, parts written
before checkpoints, and the exactly-once crash scenario with state equal to a clean pass."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from fraudstream.features.pipeline import PartKey, StateKey
from fraudstream.features.state import LAYOUTS, Entity
from fraudstream.localstack.redis_cluster import RedisCluster
from fraudstream.localstack.stack import Endpoints
from fraudstream.scoring.state import Checkpoint, PartWrite, ScorerState, redis_client
from tests.integration import crash
from tests.integration.scorer_support import deployment_env

# Keys chosen to land on different nodes of a 3-node cluster (checked below).
MERCHANTS: list[StateKey] = [(Entity.MERCHANT, f"m-{i}") for i in range(12)]


@pytest.fixture
def cluster_state(
    redis_cluster: RedisCluster, unique: Callable[[str], str]
) -> Callable[[], ScorerState]:
    prefix = unique("cluster")

    def _make() -> ScorerState:
        client = redis_client(redis_cluster.url, 2000, cluster=True)
        return ScorerState(client, prefix=prefix, partitions=2)

    return _make


def _part(value: float) -> list[float]:
    state = LAYOUTS[Entity.MERCHANT].empty()
    state[0], state[1] = 1000.0, value
    return state


def test_parts_and_checkpoints_on_many_nodes(cluster_state: Callable[[], ScorerState]) -> None:
    state = cluster_state()
    names = {state.state_key(k) for k in MERCHANTS}
    nodes = {state.client.get_node_from_key(n).name for n in names}  # type: ignore[attr-defined]
    assert len(nodes) == 3, "the keys must span every node"
    start = state.reset(0, 0)
    parts: dict[PartKey, tuple[list[float], int]] = {
        (*k, 0): (_part(float(i)), i) for i, k in enumerate(MERCHANTS)
    }
    assert state.save(parts, {0: PartWrite(start, len(MERCHANTS))}) == set()
    loaded = state.load(MERCHANTS)
    assert {k: v[0][1] for k, v in loaded.states.items()} == {
        k: float(i) for i, k in enumerate(MERCHANTS)
    }
    assert loaded.checkpoints[0] == Checkpoint(len(MERCHANTS), start.epoch)
    assert loaded.states.offsets[(*MERCHANTS[5], 0)] == 5


def test_older_parts_never_overwrite_newer_ones(cluster_state: Callable[[], ScorerState]) -> None:
    """Parts land before the checkpoint moves, so a stale writer's parts reach Redis; they
    are kept only if newer (epoch, then offset) than what a field holds."""
    state = cluster_state()
    first = state.reset(0, 0)
    key: PartKey = (*MERCHANTS[0], 0)
    assert state.save({key: (_part(1.0), 9)}, {0: PartWrite(first, 10)}) == set()
    assert state.save({key: (_part(99.0), 9)}, {0: PartWrite(first, 10)}) == {0}  # same offset
    assert state.load([MERCHANTS[0]]).states[MERCHANTS[0]][0][1] == 1.0
    rebuilt = state.reset(0, 0)
    assert rebuilt.epoch > first.epoch
    assert state.save({key: (_part(2.0), 3)}, {0: PartWrite(rebuilt, 4)}) == set()
    stale = state.save({key: (_part(98.0), 15)}, {0: PartWrite(Checkpoint(10, first.epoch), 16)})
    assert stale == {0}
    assert state.load([MERCHANTS[0]]).states[MERCHANTS[0]][0][1] == 2.0  # old epoch lost


def test_kill_minus_nine_on_a_redis_cluster_loses_and_doubles_nothing(  # noqa: PLR0917
    redis_cluster: RedisCluster,
    endpoints: Endpoints,
    admin: AdminClient,
    tmp_path: Path,
    small_registry: Path,
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
) -> None:
    cluster_endpoints = Endpoints(endpoints.kafka_bootstrap, redis_cluster.url)
    env = deployment_env(cluster_endpoints, small_registry, admin, FRAUD_REDIS_CLUSTER="true",
                         FRAUD_SCORER_BATCH_MAX="100")  # fmt: skip
    stops = (crash.Stop(fault="after_commit_before_save:3"), *crash.RANDOM_KILLS[:2])
    crash.run(env, make_producer, make_consumer, tmp_path, seed=21, stops=stops, n=2000)
