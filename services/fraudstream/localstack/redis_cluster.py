"""A local Redis Cluster of N primaries (no replicas) on free 127.0.0.1 ports, for tests.

Each node is a `redis_server.start` process in its own directory with cluster mode on;
`redis-cli --cluster create` joins them and hands out the 16384 slots. `stop` ends
exactly the pids `start` launched.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.cluster import ClusterNode

from fraudstream.errors import LocalStackError
from fraudstream.localstack import processes, redis_server

HOST = "127.0.0.1"
MIN_PRIMARIES = 3  # redis-cli refuses to create a cluster with fewer


@dataclass(frozen=True)
class NodeProcess:
    """One cluster node: its pid, client port, cluster-bus port and directory."""

    pid: int
    port: int
    bus_port: int
    home: Path


class RedisCluster:
    """Start, join and stop a private Redis Cluster under `home` (one directory per node)."""

    def __init__(self, home: Path, startup_timeout_s: float = 30.0) -> None:
        self.home = home
        self.startup_timeout_s = startup_timeout_s
        self.nodes: list[NodeProcess] = []

    @property
    def ports(self) -> list[int]:
        """Client ports of the nodes, in start order."""
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """A startup URL for `redis.cluster.RedisCluster.from_url` (the client finds the rest)."""
        if not self.nodes:
            raise LocalStackError("the Redis Cluster is not started: call start() first")
        return f"redis://{HOST}:{self.nodes[0].port}"

    @property
    def startup_nodes(self) -> list[ClusterNode]:
        """Every node, for `redis.cluster.RedisCluster(startup_nodes=...)`."""
        return [ClusterNode(HOST, port) for port in self.ports]

    def start(self, nodes: int = MIN_PRIMARIES) -> list[int]:
        """Launch `nodes` primaries, join them, await `cluster_state:ok` everywhere; the ports."""
        if self.nodes:
            raise LocalStackError(f"the Redis Cluster under {self.home} is already started")
        if nodes < MIN_PRIMARIES:
            raise LocalStackError(f"a Redis Cluster needs at least {MIN_PRIMARIES} primaries")
        redis_cli = _require_redis_cli()
        try:
            ports = _distinct_free_ports(2 * nodes)
            for index in range(nodes):
                self._start_node(self.home / f"node-{index}", ports[index], ports[nodes + index])
            for node in self.nodes:
                redis_server.await_ping(node.pid, node.port, node.home, self.startup_timeout_s)
            self._create(redis_cli)
            self._await_state_ok()
        except BaseException:
            self.stop()
            raise
        return self.ports

    def stop(self) -> bool:
        """Stop the nodes `start` launched (by pid, checked by name); True if any was running."""
        stopped = [processes.stop(node.pid, redis_server.MARKER) for node in self.nodes]
        self.nodes = []
        return any(stopped)

    def _start_node(self, home: Path, port: int, bus_port: int) -> None:
        cluster_args = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",  # relative to the node's --dir
            "--cluster-port", str(bus_port),
        ]  # fmt: skip
        pid = redis_server.start(home, port, persistent=False, extra_args=cluster_args)
        self.nodes.append(NodeProcess(pid, port, bus_port, home))

    def _create(self, redis_cli: str) -> None:
        addresses = [f"{HOST}:{port}" for port in self.ports]
        argv = [redis_cli, "--cluster", "create", *addresses]
        argv += ["--cluster-replicas", "0", "--cluster-yes"]
        try:
            result = subprocess.run(
                argv, capture_output=True, text=True, timeout=self.startup_timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise LocalStackError(f"`{' '.join(argv)}` hung; see the node logs") from exc
        if result.returncode != 0 or "[OK] All 16384 slots covered" not in result.stdout:
            raise LocalStackError(
                f"`{' '.join(argv)}` failed ({result.returncode}):\n"
                f"{(result.stdout + result.stderr)[-2000:]}"
            )

    def _await_state_ok(self) -> None:
        def all_ok() -> bool:
            return all(cluster_state_ok(port, len(self.nodes)) for port in self.ports)

        if not processes.wait_until(all_ok, self.startup_timeout_s, interval=0.05):
            raise LocalStackError(
                f"Redis Cluster on ports {self.ports} not `cluster_state:ok` within "
                f"{self.startup_timeout_s:.0f} s; see the redis.log files under {self.home}"
            )


def cluster_state_ok(port: int, known_nodes: int) -> bool:
    """True when the node on `port` says `cluster_state:ok` and knows `known_nodes` nodes."""
    try:
        with redis.Redis(host=HOST, port=port, socket_timeout=0.5) as client:
            info = client.execute_command("CLUSTER INFO")  # parsed by redis-py into a dict
    except redis.RedisError:
        return False
    return bool(
        info.get("cluster_state") == "ok" and info.get("cluster_known_nodes") == str(known_nodes)
    )


def _require_redis_cli() -> str:
    redis_server.require_redis_server()  # Debian's redis-server package brings redis-cli
    found = shutil.which("redis-cli")
    if found is None:
        raise LocalStackError(
            "redis-cli is needed to create a Redis Cluster: install it "
            "(Debian: apt-get install redis-tools)"
        )
    return found


def _distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = processes.free_port()
        if port not in ports:
            ports.append(port)
    return ports
