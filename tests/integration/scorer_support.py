"""Shared set-up for scorer integration tests: an isolated deployment and a small model."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from fraudstream import kafka_clients
from fraudstream.features.pipeline import FeaturePipeline, PartStates
from fraudstream.features.spec import FeatureConfig
from fraudstream.localstack.stack import Endpoints
from fraudstream.model.train_config import LightGBMParams, TrainConfig
from fraudstream.registry import Registry
from fraudstream.scoring.model import scoring_spec
from fraudstream.scoring.settings import ScorerSettings
from fraudstream.scoring.state import ScorerState, redis_client
from fraudstream.scoring.sync import Fold
from fraudstream.simulator import SimulationConfig
from fraudstream.topics import provision
from fraudstream.trainer import TrainOutcome, simulated_history, train_and_register

REPO = Path(__file__).resolve().parents[2]


def train_small_model(root: Path, *, train_seed: int = 1) -> TrainOutcome:
    """A champion trained in seconds on simulated history (small trees, few rounds)."""
    os.environ.setdefault("FRAUD_GIT_COMMIT", "test")
    history = simulated_history(SimulationConfig(seed=21, n_transactions=12_000, days=10))
    config = TrainConfig(
        seed=train_seed, split_fractions=(0.5, 0.3, 0.2), parity_rows=300,
        lightgbm=LightGBMParams(num_boost_round=40, num_leaves=15),
    )  # fmt: skip
    return train_and_register(
        history, features=FeatureConfig.from_yaml(REPO / "config" / "features.yaml"),
        config=config, registry=Registry(root), name="fraud",
    )  # fmt: skip


def deployment_env(
    endpoints: Endpoints, registry_dir: Path, admin: AdminClient, **extra: str
) -> dict[str, str]:
    """Environment of one isolated scorer: own topics (provisioned), group and key prefix."""
    run = uuid.uuid4().hex[:8]
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka_bootstrap,
        "REDIS_URL": endpoints.redis_url,
        "FRAUD_TOPIC_PARTITIONS": "3",
        "FRAUD_SCORER_GROUP_ID": f"scorer-{run}",
        "FRAUD_REDIS_PREFIX": f"t{run}",
        "FRAUD_REGISTRY_DIR": str(registry_dir),
        "FRAUD_RULES_FILE": str(REPO / "config" / "rules.yaml"),
        "FRAUD_METRICS_PORT": "0",
        "FRAUD_SCORER_BATCH_WAIT_MS": "20",
        **extra,
    }
    for name in (
        "transactions",
        "dlq",
        "decisions",
        "review",
        "labels",
        "retrain",
        "models",
        "rules",
    ):
        env[f"FRAUD_TOPIC_{name.upper()}"] = f"{run}.{name}"
    provision(admin, settings_from_env(env))
    return env


def settings_from_env(env: dict[str, str]) -> ScorerSettings:
    """The settings a scorer started with `env` would read."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return ScorerSettings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def input_log(env: dict[str, str]) -> dict[int, list[tuple[int, bytes | None, int | None]]]:
    """Every record of the deployment's input topic, per partition, in offset order."""
    settings = settings_from_env(env)
    consumer = kafka_clients.consumer(settings, env["KAFKA_BOOTSTRAP_SERVERS"],
                                      f"verify-{uuid.uuid4().hex[:8]}")  # fmt: skip
    topic = settings.topic_transactions
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions}  # fmt: skip
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    log: dict[int, list[tuple[int, bytes | None, int | None]]] = {p: [] for p in partitions}
    deadline = time.monotonic() + 60
    try:
        while any(consumer.position([TopicPartition(topic, p)])[0].offset < end
                  for p, end in ends.items() if end > 0):  # fmt: skip
            assert time.monotonic() < deadline, "could not read the input topic back"
            for message in consumer.consume(1000, timeout=0.5):
                if message.error() is None:
                    _kind, ts = message.timestamp()
                    log[message.partition() or 0].append(
                        (message.offset() or 0, message.value(), ts if ts > 0 else None)
                    )
    finally:
        consumer.close()
    return log


def redis_caught_up(env: dict[str, str]) -> bool:
    """Whether every input partition's Redis checkpoint has reached the end of its log
    (what a running scorer does by itself, on its idle ticks, once it is assigned)."""
    settings = settings_from_env(env)
    consumer = kafka_clients.consumer(settings, env["KAFKA_BOOTSTRAP_SERVERS"],
                                      f"verify-{uuid.uuid4().hex[:8]}")  # fmt: skip
    topic = settings.topic_transactions
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions}  # fmt: skip
    finally:
        consumer.close()
    client = redis_client(env["REDIS_URL"], 5000, cluster=settings.redis_cluster)
    try:
        state = ScorerState(client, prefix=f"{env['FRAUD_REDIS_PREFIX']}:fs",
                            topic=topic, partitions=len(ends))  # fmt: skip
        checkpoints = state.checkpoints()
    finally:
        client.close()
    return all(
        end == 0 or ((found := checkpoints.get(p)) is not None and found.offset >= end)
        for p, end in ends.items()
    )


def assert_state_matches_a_clean_pass(env: dict[str, str]) -> None:
    """Every entity part and checkpoint in Redis equals one clean pass over the input log,
    bit for bit: nothing lost, nothing doubled, whatever happened on the way."""
    settings = settings_from_env(env)
    log = input_log(env)
    fold = Fold(FeaturePipeline(scoring_spec(None)), settings.max_message_bytes)
    expected = PartStates()
    for partition, records in log.items():
        fold(partition, records, expected)
    client = redis_client(env["REDIS_URL"], 5000, cluster=settings.redis_cluster)
    try:
        state = ScorerState(client, prefix=f"{env['FRAUD_REDIS_PREFIX']}:fs",
                            topic=settings.topic_transactions, partitions=len(log))  # fmt: skip
        loaded = state.load(list(expected))
    finally:
        client.close()  # its sockets would otherwise be collected inside a later test
    for partition, records in log.items():
        checkpoint = loaded.checkpoints[partition]
        if records:
            assert checkpoint is not None, f"partition {partition} has no checkpoint"
            assert checkpoint.offset >= records[-1][0] + 1, (partition, checkpoint, records[-1][0])
    wrong = [
        key for key, parts in expected.items()
        if {p: np.array(v).tobytes() for p, v in parts.items()}
        != {p: np.array(v).tobytes() for p, v in loaded.states.get(key, {}).items()}
    ]  # fmt: skip
    assert not wrong, f"{len(wrong)} of {len(expected)} entities differ, e.g. {wrong[:3]}"


def start_module(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`python -m module` with `env` over ours, its output appended to `log`."""
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", module],
            env={**os.environ, **env}, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip


def logged_port(log: Path, marker: str) -> int:
    """The port a service logged on its line containing `marker` (`...:<port>` or
    `... <port>` at the end of the line)."""
    for line in log.read_text().splitlines():
        if marker in line:
            return int(line.replace(":", " ").rsplit(" ", 1)[-1])
    raise AssertionError(f"no line with {marker!r} in {log}")


def scrape_metrics(port: int) -> str:
    """The text of a local service's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())
