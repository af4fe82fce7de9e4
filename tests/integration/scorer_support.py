"""Shared set-up for scorer integration tests: an isolated deployment and a small model."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient

from fraudstream.features.spec import FeatureConfig
from fraudstream.localstack.stack import Endpoints
from fraudstream.registry import Registry
from fraudstream.scoring.settings import ScorerSettings
from fraudstream.simulator import SimulationConfig
from fraudstream.topics import provision
from fraudstream.trainer import TrainOutcome, simulated_history, train_and_register
from fraudstream.training.config import LightGBMParams, TrainConfig

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
    for name in ("transactions", "dlq", "decisions", "review", "labels", "retrain", "models"):
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
