"""The trainer service on the real broker: a trigger on `fraud.retrain` becomes a
registered challenger evaluated against the champion on the archive, announced on
`fraud.models`; a trigger sent while it trains is coalesced into that job; after a
restart, a trigger already trained for is not trained again, and one whose job was
stopped midway is trained again."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from fraudstream.contracts import ModelEvent, ModelEventType, encode
from fraudstream.localstack.stack import Endpoints
from fraudstream.registry import Registry, Stage
from fraudstream.retrain.cli import manual_trigger
from fraudstream.retrain.job import Evaluation
from fraudstream.retrain.policy import PromotionConfig
from fraudstream.simulator import SimulationConfig, simulate
from fraudstream.simulator.archive import archive_tables, write_topic
from tests.integration.conftest import consume_n
from tests.integration.scorer_support import (
    deployment_env,
    logged_port,
    scrape_metrics,
    settings_from_env,
    start_module,
)
from tests.waiting import await_condition

pytestmark = pytest.mark.integration
TRAIN_CONFIG = """
seed: 3
split_fractions: [0.5, 0.3, 0.2]
parity_rows: 300
min_validation_frauds: 5
lightgbm: {num_boost_round: 40, num_leaves: 15}
"""


def _archive(root: Path, env: dict[str, str], now: datetime) -> None:
    """Three weeks of simulated traffic and its labels, as the archiver writes them."""
    sim = simulate(SimulationConfig(seed=5, n_transactions=40_000, days=20, fraud_rate=0.01,
                                    start=now - timedelta(days=21)))  # fmt: skip
    transactions, labels = archive_tables(sim, partitions=3)
    write_topic(root, env["FRAUD_TOPIC_TRANSACTIONS"], transactions)
    write_topic(root, env["FRAUD_TOPIC_LABELS"], labels)


def _deployment(
    endpoints: Endpoints, small_registry: Path, admin: AdminClient, tmp_path: Path
) -> dict[str, str]:
    """A trainer's environment over a copy of the small registry and a simulated archive."""
    registry_dir = tmp_path / "models"
    shutil.copytree(small_registry, registry_dir)
    config = tmp_path / "train.yaml"
    config.write_text(TRAIN_CONFIG)
    env = deployment_env(
        endpoints, registry_dir, admin, FRAUD_ARCHIVE_URL=str(tmp_path / "archive"),
        FRAUD_TRAINER_CONFIG=str(config), FRAUD_TRAINER_GROUP_ID=f"trainer-{tmp_path.name}",
        FRAUD_TRAINER_METRICS_PORT="0", FRAUD_TRAINER_TRAIN_DAYS="10",
        FRAUD_TRAINER_EVAL_DAYS="4", FRAUD_TRAINER_WARMUP_DAYS="3",
        FRAUD_TRAINER_MATURE_DAYS="1", FRAUD_TRAINER_MIN_FRAUDS="20",
        FRAUD_TRAINER_CHECK_S="0.5",
    )  # fmt: skip
    _archive(tmp_path / "archive", env, datetime.now(UTC))
    return env


def test_trigger_becomes_an_evaluated_challenger_and_a_second_is_coalesced(  # noqa: PLR0917
    endpoints: Endpoints,
    small_registry: Path,
    admin: AdminClient,
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
    tmp_path: Path,
) -> None:
    env = _deployment(endpoints, small_registry, admin, tmp_path)
    settings = settings_from_env(env)
    registry = Registry(env["FRAUD_REGISTRY_DIR"])
    champion = registry.champion("fraud")
    assert champion is not None
    models = make_consumer(settings.topic_models)
    producer = make_producer()
    first, second = manual_trigger("fraud"), manual_trigger("fraud")
    log = tmp_path / "trainer.log"
    proc = start_module("fraudstream.retrain.service", env, log)
    try:
        producer.produce(settings.topic_retrain, encode(first), key=b"fraud")
        assert producer.flush(30) == 0
        await_condition(lambda: f"trigger {first.trigger_id}" in log.read_text()
                        or proc.poll() is not None, 60, what="the job to start")  # fmt: skip
        producer.produce(settings.topic_retrain, encode(second), key=b"fraud")
        assert producer.flush(30) == 0
        got = consume_n(models, 2, 180)
        assert len(got) == 2, log.read_text()[-3000:]
        event, step = (ModelEvent.model_validate_json(m.value() or b"") for m in got)
        assert event.event is ModelEventType.REGISTERED
        assert first.trigger_id in event.note
        text = registry.evaluation("fraud", event.version)
        assert text is not None
        evaluation = Evaluation.model_validate_json(text)
        assert evaluation.triggers == [first.trigger_id, second.trigger_id]
        assert evaluation.champion is not None
        assert evaluation.champion.version == champion.version
        assert evaluation.challenger.decisions == evaluation.champion.decisions > 0
        assert evaluation.recall_difference is not None
        assert evaluation.recall_difference["low"] <= evaluation.recall_difference["high"]
        # The promotion policy's first step follows: shadow, or retired when clearly worse.
        assert not evaluation.champion_in_sample  # the champion trained on January 2026
        worse = evaluation.recall_difference["high"] < -PromotionConfig().offline.max_recall_loss
        assert step.version == event.version
        assert step.event is (ModelEventType.RETIRED if worse else ModelEventType.SHADOW)
        assert step.actor == "trainer"
        assert "offline recall difference" in step.note
        assert registry.get("fraud", event.version).stage is (
            Stage.RETIRED if worse else Stage.SHADOW
        )
        metrics = scrape_metrics(logged_port(log, "metrics on http"))
        assert 'fraud_trainer_runs_total{outcome="registered"} 1.0' in metrics
        assert 'fraud_trainer_triggers_total{outcome="coalesced"} 1.0' in metrics
        assert "fraud_trainer_running 0.0" in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    # Restarted on the same group: committed triggers are not read again, and the same
    # trigger sent again (a producer retry, a replay) is known as trained.
    log.write_text("")
    proc = start_module("fraudstream.retrain.service", env, log)
    try:
        producer.produce(settings.topic_retrain, encode(second), key=b"fraud")
        assert producer.flush(30) == 0
        await_condition(
            lambda: (
                "already has a registered version" in log.read_text() or proc.poll() is not None
            ),
            60,
            what="the repeat to be recognised",
        )
        assert "retraining" not in log.read_text()
        assert len(registry.list("fraud")) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]


def test_a_trainer_stopped_mid_job_exits_cleanly_and_trains_again_after_restart(  # noqa: PLR0917
    endpoints: Endpoints,
    small_registry: Path,
    admin: AdminClient,
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
    tmp_path: Path,
) -> None:
    env = _deployment(endpoints, small_registry, admin, tmp_path)
    settings = settings_from_env(env)
    models = make_consumer(settings.topic_models)
    producer = make_producer()
    trigger = manual_trigger("fraud")
    log = tmp_path / "trainer.log"
    proc = start_module("fraudstream.retrain.service", env, log)
    producer.produce(settings.topic_retrain, encode(trigger), key=b"fraud")
    assert producer.flush(30) == 0
    await_condition(lambda: "features and training on" in log.read_text()
                    or proc.poll() is not None, 60, what="the job to train")  # fmt: skip
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, log.read_text()[-3000:]
    assert "stopping with a retrain running" in log.read_text()
    assert consume_n(models, 1, 2) == []  # nothing registered by the abandoned job
    log.write_text("")
    proc = start_module("fraudstream.retrain.service", env, log)
    try:  # its trigger was not committed: read again, trained, registered
        got = consume_n(models, 1, 180)
        assert len(got) == 1, log.read_text()[-3000:]
        event = ModelEvent.model_validate_json(got[0].value() or b"")
        assert event.event is ModelEventType.REGISTERED
        assert trigger.trigger_id in event.note
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
