"""The drift monitor service on the real broker: decisions whose monitored features all
moved far from the champion's reference produce one severe retraining trigger on
`fraud.retrain` naming them, and labels join their decisions (counted on /metrics); a
monitor whose broker died still stops on SIGTERM."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from fraudstream.contracts import (
    Action,
    Decision,
    DecisionPath,
    Label,
    LabelSource,
    RetrainTrigger,
    Verdict,
    encode,
)
from fraudstream.localstack import processes
from fraudstream.localstack.stack import Endpoints, LocalStack
from fraudstream.model.drift_reference import DriftReference
from fraudstream.registry import Registry
from fraudstream.settings import CommonSettings
from fraudstream.topics import provision
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


def _decision(i: int, version: str, at: datetime, monitored: dict[str, float]) -> Decision:
    return Decision(
        transaction_id=f"drift-{i}", card_token=f"tok-{i % 97}", action=Action.APPROVE,
        score=0.001, model_version=version, path=DecisionPath.ML, event_time=at,
        decided_at=at, latency_ms=5.0, monitored=monitored,
    )  # fmt: skip


def test_shifted_inputs_raise_one_trigger_and_labels_join(  # noqa: PLR0917 - fixtures
    endpoints: Endpoints,
    small_registry: Path,
    admin: AdminClient,
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
    tmp_path: Path,
) -> None:
    config = tmp_path / "drift.yaml"
    config.write_text("psi:\n  window: 500\n  consecutive: 1\n")
    env = deployment_env(
        endpoints, small_registry, admin, FRAUD_DRIFT_CONFIG=str(config),
        FRAUD_DRIFT_GROUP_ID=f"drift-{tmp_path.name[-12:]}", FRAUD_DRIFT_METRICS_PORT="0",
    )  # fmt: skip
    settings = settings_from_env(env)
    champion = Registry(small_registry).champion("fraud")
    assert champion is not None
    reference = DriftReference.read(champion.path)
    assert reference is not None
    names = list(reference.features)
    retrain = make_consumer(settings.topic_retrain)
    producer = make_producer()
    log = tmp_path / "drift.log"
    proc = start_module("fraudstream.drift.service", env, log)
    try:
        await_condition(lambda: "Ready" in log.read_text() or proc.poll() is not None, 90,
                        what="the faust worker to start")  # fmt: skip
        assert proc.poll() is None, log.read_text()[-3000:]
        start = datetime(2026, 11, 23, 12, tzinfo=UTC)
        far = {n: max(reference.features[n].edges, default=0.0) * 10 + 100.0 for n in names}
        for i in range(1_000):  # every monitored feature far above anything training saw
            decision = _decision(i, champion.version, start + timedelta(seconds=i), far)
            producer.produce(settings.topic_decisions, encode(decision),
                             key=decision.card_token.encode())  # fmt: skip
        label = Label(transaction_id="drift-7", verdict=Verdict.FRAUD,
                      source=LabelSource.CHARGEBACK,
                      labelled_at=start + timedelta(days=2))  # fmt: skip
        producer.produce(settings.topic_labels, encode(label), key=b"drift-7")
        assert producer.flush(30) == 0
        got = consume_n(retrain, 1, 90)
        assert len(got) == 1, log.read_text()[-3000:]
        trigger = RetrainTrigger.model_validate_json(got[0].value() or b"")
        assert (trigger.model_name, trigger.model_version) == ("fraud", champion.version)
        assert trigger.detector == "feature_psi"
        assert trigger.severe
        assert trigger.feature in names
        assert {f"feature_psi.{n}.psi" for n in names} <= set(trigger.evidence)
        assert not consume_n(retrain, 1, 3)  # debounced: one trigger for one shift
        port = logged_port(log, "drift monitor metrics on port")
        await_condition(lambda: 'fraud_drift_label_joins{outcome="joined"} 1.0'
                        in scrape_metrics(port), 30, what="the label to join")  # fmt: skip
        metrics = scrape_metrics(port)
        assert "fraud_retrain_triggers_total 1.0" in metrics
        assert f'fraud_drift_detected{{detector="feature_psi",feature="{names[0]}"' in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def test_a_monitor_whose_broker_died_still_stops_on_sigterm(
    tmp_path: Path, stack_settings: CommonSettings, small_registry: Path
) -> None:
    """faust alone waits forever for its futures once the broker is gone; the stop timer
    ends the process instead (status 1, said in the log)."""
    settings = CommonSettings(state_dir=tmp_path / "state", cache_dir=stack_settings.cache_dir)
    stack = LocalStack(settings)
    state = stack.up(say=lambda _line: None)
    try:
        provision(AdminClient({"bootstrap.servers": state.kafka_bootstrap}), settings)
        env = {"KAFKA_BOOTSTRAP_SERVERS": state.kafka_bootstrap,
               "REDIS_URL": f"redis://127.0.0.1:{state.redis_port}/0",
               "FRAUD_REGISTRY_DIR": str(small_registry), "FRAUD_DRIFT_METRICS_PORT": "0",
               "FRAUD_DRIFT_GROUP_ID": f"drift-{tmp_path.name[-12:]}",
               "FRAUD_DRIFT_STOP_TIMEOUT_S": "5"}  # fmt: skip
        log = tmp_path / "drift.log"
        proc = start_module("fraudstream.drift.service", env, log)
        await_condition(lambda: "Ready" in log.read_text() or proc.poll() is not None, 90,
                        what="the faust worker to start")  # fmt: skip
        assert proc.poll() is None, log.read_text()[-3000:]
        os.kill(state.kafka_pid, signal.SIGKILL)
        await_condition(lambda: not processes.port_open(state.kafka_port), 30,
                        what="the broker to be gone")  # fmt: skip
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 1, log.read_text()[-3000:]
        assert "did not stop within 5 s of the signal" in log.read_text()
    finally:
        stack.down(say=lambda _line: None)
