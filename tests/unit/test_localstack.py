"""Pure parts of the embedded stack: broker config, process checks, endpoint resolution."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from fraudstream.errors import InfrastructureUnavailable, LocalStackError
from fraudstream.localstack import kafka, processes
from fraudstream.localstack.redis_cluster import RedisCluster
from fraudstream.localstack.stack import resolve_endpoints
from fraudstream.settings import CommonSettings


def test_broker_config_makes_transactions_work_on_one_node(tmp_path: Path) -> None:
    layout = kafka.KafkaLayout(lib_dir=tmp_path / "lib", home=tmp_path / "home")
    props = dict(
        line.split("=", 1) for line in kafka.server_properties(layout, 9092, 9093).splitlines()
    )
    assert props["process.roles"] == "broker,controller"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["auto.create.topics.enable"] == "false"
    assert Path(props["log.dirs"]).is_absolute()


def test_free_port_is_bindable_and_port_open_tells_listeners_apart() -> None:
    port = processes.free_port()
    assert not processes.port_open(port)
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        assert processes.port_open(port)


def test_is_running_checks_the_command_line() -> None:
    me = os.getpid()
    assert processes.is_running(me, "python")
    assert not processes.is_running(me, "kafka.Kafka")
    assert not processes.stop(me, "kafka.Kafka")  # never signals a process it did not start


def test_configured_endpoints_win(tmp_path: Path) -> None:
    settings = CommonSettings(
        kafka_bootstrap_servers="k:9092", redis_url="redis://r:6379/0", state_dir=tmp_path
    )
    endpoints = resolve_endpoints(settings)
    assert (endpoints.kafka_bootstrap, endpoints.redis_url) == ("k:9092", "redis://r:6379/0")


def test_no_stack_and_no_configuration_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(InfrastructureUnavailable, match="fraudctl up"):
        resolve_endpoints(CommonSettings(state_dir=tmp_path))


def test_missing_java_says_how_to_fix_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(LocalStackError, match=r"Java >= 17.*KAFKA_BOOTSTRAP_SERVERS"):
        kafka.require_java()


def test_missing_maven_says_how_to_fix_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(LocalStackError, match="Maven"):
        kafka.ensure_jars(tmp_path, "4.1.1")


def test_cluster_ids_are_kafka_uuids_that_never_look_like_flags() -> None:
    ids = {kafka.cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


def test_redis_cluster_needs_three_primaries_and_a_start_for_its_url(tmp_path: Path) -> None:
    cluster = RedisCluster(tmp_path)
    with pytest.raises(LocalStackError, match="at least 3"):
        cluster.start(nodes=2)
    with pytest.raises(LocalStackError, match="not started"):
        _ = cluster.url
    assert cluster.ports == []
    assert not cluster.stop()
