"""Session fixture: the real Kafka broker and Redis, started once (or reused via env).

With KAFKA_BOOTSTRAP_SERVERS and REDIS_URL set, the tests use that infrastructure;
otherwise they start a private embedded stack on free ports and stop it at the end.
Factory fixtures hand out uniquely named topics, producers and consumers.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from fraudstream import kafka_clients
from fraudstream.localstack.redis_cluster import RedisCluster
from fraudstream.localstack.stack import Endpoints, LocalStack
from fraudstream.settings import CommonSettings
from tests.integration.review_support import (
    DATABASES,
    PostgresServer,
    StoreFactory,
    postgres_server,
    store_factory_on,
)

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> CommonSettings:
    """Settings of the private test stack (jars cached in the repo's .cache)."""
    return CommonSettings(
        state_dir=tmp_path_factory.mktemp("stack"),
        cache_dir=Path(os.environ.get("FRAUD_CACHE_DIR", REPO / ".cache")),
    )


@pytest.fixture(scope="session")
def local_stack(stack_settings: CommonSettings) -> Iterator[LocalStack | None]:
    """The private embedded stack (None when the environment names existing servers)."""
    kafka_env, redis_env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), os.environ.get("REDIS_URL")
    if kafka_env and redis_env:
        yield None
        return
    stack = LocalStack(stack_settings)
    stack.up(say=lambda _line: None)
    try:
        yield stack
    finally:
        stack.down(say=lambda _line: None)


@pytest.fixture(scope="session")
def endpoints(local_stack: LocalStack | None) -> Endpoints:
    if local_stack is None:
        return Endpoints(os.environ["KAFKA_BOOTSTRAP_SERVERS"], os.environ["REDIS_URL"])
    state = local_stack.load()
    assert state is not None
    return Endpoints(state.kafka_bootstrap, state.redis_url)


@pytest.fixture(scope="session")
def settings(endpoints: Endpoints) -> CommonSettings:
    return CommonSettings(
        kafka_bootstrap_servers=endpoints.kafka_bootstrap, redis_url=endpoints.redis_url
    )


@pytest.fixture(scope="session")
def admin(settings: CommonSettings, endpoints: Endpoints) -> AdminClient:
    return kafka_clients.admin_client(settings, endpoints.kafka_bootstrap)


@pytest.fixture
def redis_client(endpoints: Endpoints) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(endpoints.redis_url, socket_timeout=2)
    yield client
    client.close()


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Names that never collide between tests or runs."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_topic(admin: AdminClient, unique: Callable[[str], str]) -> Callable[..., str]:
    def _make(partitions: int = 1, **config: str) -> str:
        name = unique("test")
        future = admin.create_topics([NewTopic(name, partitions, 1, config=config)])[name]
        future.result(timeout=30)
        return name

    return _make


@pytest.fixture
def make_producer(
    settings: CommonSettings, endpoints: Endpoints
) -> Iterator[Callable[..., Producer]]:
    made: list[Producer] = []

    def _make(overrides: dict[str, Any] | None = None) -> Producer:
        producer = kafka_clients.producer(settings, endpoints.kafka_bootstrap, overrides)
        made.append(producer)
        return producer

    yield _make
    for producer in made:
        producer.flush(10)


@pytest.fixture
def make_consumer(
    settings: CommonSettings, endpoints: Endpoints, unique: Callable[[str], str]
) -> Iterator[Callable[..., Consumer]]:
    made: list[Consumer] = []

    def _make(topic: str, overrides: dict[str, Any] | None = None) -> Consumer:
        consumer = kafka_clients.consumer(
            settings, endpoints.kafka_bootstrap, unique("group"), overrides
        )
        consumer.subscribe([topic])
        made.append(consumer)
        return consumer

    yield _make
    for consumer in made:
        consumer.close()


def consume_n(consumer: Consumer, n: int, timeout_s: float = 30.0) -> list[Message]:
    """Poll until `n` records arrived (errors fail the test) or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    got: list[Message] = []
    while len(got) < n and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is None:
            continue
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                continue
            pytest.fail(f"consumer error: {error}")
        got.append(message)
    return got


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A private 3-primary Redis Cluster, started once and only if a test asks for it.

    Its `url` is a startup URL for `redis.cluster.RedisCluster.from_url`; `ports` lists
    every node. Needs no Kafka.
    """
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    cluster.start(nodes=3)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def small_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with a small champion, trained once for the tests that only read it."""
    from tests.integration.scorer_support import train_small_model  # noqa: PLC0415

    root = tmp_path_factory.mktemp("small-registry")
    assert train_small_model(root).promoted
    return root


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL server (Debian's package), started once if a test asks for it."""
    with postgres_server() as server:
        yield server


@pytest.fixture(params=DATABASES)
def review_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty case-store URL: SQLite in the test's directory, or a new database on
    the session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'review.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.database()


@pytest.fixture
def store_factory(review_db: str, tmp_path: Path) -> Iterator[StoreFactory]:
    """Case stores on `review_db` (several share it, as the service's threads do)."""
    with store_factory_on(review_db, tmp_path) as make:
        yield make
