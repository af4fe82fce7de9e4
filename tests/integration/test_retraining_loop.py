"""The loop end to end on the real broker: the scorer, the archiver, the drift monitor and
the trainer as separate processes. Simulated traffic drifts; the monitor triggers; the
trainer trains a challenger on the archive and registers it; the promotion policy takes
it through shadow and canary to champion; the scorer then serves it. Every transaction
gets exactly one decision throughout, reloads included.

The policy here is permissive (no offline gate, any recall, one fraud card per arm) so
the walk fits in a test whatever the seed: a challenger trained right after the drift
has mostly pre-drift data and may well lose, and in one seed's canary period one card
held 35 of the champion arm's frauds. The gates are held to their numbers in
tests/unit/test_promotion.py and load_tests/canary_power.py."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from fraudstream.contracts import Decision, Label, ModelEvent, ModelEventType, Transaction, encode
from fraudstream.features.spec import FeatureConfig
from fraudstream.kafka_clients import commit_at_end
from fraudstream.localstack.stack import Endpoints
from fraudstream.model.train_config import LightGBMParams, TrainConfig
from fraudstream.registry import Registry, Stage
from fraudstream.simulator import TRUTH_COLUMNS, DriftConfig, SimulationConfig, iter_transactions
from fraudstream.simulator import simulate as run_simulation
from fraudstream.trainer import TrainWindow, simulated_history, train_and_register
from tests.integration.archive_support import archiver_env, start_archiver
from tests.integration.conftest import consume_n
from tests.integration.scorer_support import (
    REPO,
    logged_port,
    scrape_metrics,
    settings_from_env,
    start_module,
)
from tests.waiting import await_condition

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
# 24 days that ended 36 days ago: most of their chargebacks (~18 days late) are in. From
# midnight, so that every run of a day simulates the same world.
START = (NOW - timedelta(days=60)).replace(hour=0, minute=0, second=0)
WORLD = SimulationConfig(
    seed=int(os.environ.get("FRAUD_TEST_SEED", "11")),  # load_tests/loop_stress.py
    n_transactions=28_800, days=24, fraud_rate=0.01, start=START,
    drift=DriftConfig(at=START + timedelta(days=12), amount_multiplier=3.0,
                      online_share_multiplier=2.0),
)  # fmt: skip
TRAIN = TrainConfig(
    seed=1, split_fractions=(0.5, 0.3, 0.2), parity_rows=300, min_validation_frauds=5,
    lightgbm=LightGBMParams(num_boost_round=40, num_leaves=15),
)  # fmt: skip
DRIFT = "psi:\n  window: 1000\n  consecutive: 1\n"
PROMOTION = """
offline: {max_recall_loss: 1.0}
shadow: {events: 200}
canary: {share: 0.5, label_wait_hours: 0, min_frauds: 1, min_declines: 0,
         recall_margin: -1.0, precision_tolerance: 2.0, review_tolerance: 1000.0}
probation: {hours: 0}
"""
CHUNK = 300


class Answers:
    """Every decision the scorer has produced, read as it comes."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.decisions: list[Decision] = []

    def await_total(self, n: int, timeout_s: float) -> list[Decision]:
        """Read until `n` decisions in all; the ones read by this call."""
        first, deadline = len(self.decisions), time.monotonic() + timeout_s
        while len(self.decisions) < n and time.monotonic() < deadline:
            for message in consume_n(self.consumer, n - len(self.decisions), 1):
                self.decisions.append(Decision.model_validate_json(message.value() or b""))
        assert len(self.decisions) >= n, f"{len(self.decisions)} of {n} decisions"
        return self.decisions[first:]


def _send(producer: Producer, topic: str, txs: list[Transaction]) -> None:
    for tx in txs:
        producer.produce(topic, encode(tx), key=tx.card_token.encode())
        producer.poll(0)
    assert producer.flush(30) == 0


def _champion(registry_dir: Path) -> str:
    """A champion trained on days 2-12: its reference (the test split) is days 10-12."""
    os.environ.setdefault("FRAUD_GIT_COMMIT", "test")
    outcome = train_and_register(
        simulated_history(WORLD), features=FeatureConfig.from_yaml(REPO / "config/features.yaml"),
        config=TRAIN, registry=Registry(registry_dir), name="fraud",
        window=TrainWindow(WORLD.start + timedelta(days=2), WORLD.start + timedelta(days=12)),
    )  # fmt: skip
    assert outcome.promoted
    return outcome.version.version


@pytest.fixture
def processes() -> Iterator[dict[str, tuple[subprocess.Popen[bytes], Path]]]:
    running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    yield running
    for proc, _log in running.values():
        proc.send_signal(signal.SIGTERM)
    for name, (proc, log) in running.items():
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"{name} did not stop on SIGTERM: {log.read_text()[-2000:]}")


def _logs(processes: dict[str, tuple[subprocess.Popen[bytes], Path]]) -> str:
    return "\n".join(f"--- {name}\n{log.read_text()[-2500:]}"
                     for name, (_proc, log) in processes.items())  # fmt: skip


@pytest.mark.timeout(600)  # four services and two trainings on two cores
def test_drift_retrains_promotes_and_serves_the_challenger(  # noqa: PLR0917
    endpoints: Endpoints,
    admin: AdminClient,
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
    processes: dict[str, tuple[subprocess.Popen[bytes], Path]],
    tmp_path: Path,
) -> None:
    registry_dir = tmp_path / "models"
    champion = _champion(registry_dir)
    (tmp_path / "drift.yaml").write_text(DRIFT)
    (tmp_path / "promotion.yaml").write_text(PROMOTION)
    (tmp_path / "train.yaml").write_text(TRAIN.model_dump_json())
    env = archiver_env(
        endpoints, admin, tmp_path, registry_dir,
        FRAUD_DRIFT_CONFIG=str(tmp_path / "drift.yaml"),
        FRAUD_DRIFT_GROUP_ID=f"drift-{tmp_path.name[-12:]}", FRAUD_DRIFT_METRICS_PORT="0",
        FRAUD_PROMOTION_CONFIG=str(tmp_path / "promotion.yaml"),
        FRAUD_TRAINER_CONFIG=str(tmp_path / "train.yaml"),
        FRAUD_TRAINER_GROUP_ID=f"trainer-{tmp_path.name[-12:]}",
        FRAUD_TRAINER_METRICS_PORT="0", FRAUD_TRAINER_TRAIN_DAYS="8",
        FRAUD_TRAINER_EVAL_DAYS="3", FRAUD_TRAINER_WARMUP_DAYS="2",
        FRAUD_TRAINER_MATURE_DAYS="1", FRAUD_TRAINER_MIN_FRAUDS="20",
        FRAUD_TRAINER_CHECK_S="1",
    )  # fmt: skip
    settings = settings_from_env(env)
    sim = run_simulation(WORLD)
    txs = list(iter_transactions(sim.transactions.drop_columns(list(TRUTH_COLUMNS))))
    labels = [Label.model_validate(row, strict=False) for row in
              sim.labels.select(list(Label.model_fields)).to_pylist()]  # fmt: skip
    known = [label for label in labels if label.labelled_at <= NOW]
    assert WORLD.drift is not None
    drift_at = WORLD.drift.at
    warm = [tx for tx in txs if tx.event_time < WORLD.start + timedelta(days=10)]
    before = [tx for tx in txs if warm[-1].event_time < tx.event_time < drift_at]
    drifted = [tx for tx in txs if drift_at <= tx.event_time < drift_at + timedelta(days=4)]
    later = [tx for tx in txs if tx.event_time >= drift_at + timedelta(days=4)]

    answers = Answers(make_consumer(settings.topic_decisions))
    models = make_consumer(settings.topic_models)
    retrain = make_consumer(settings.topic_retrain)
    producer = make_producer()
    for name, module in (("scorer", "fraudstream.scoring.service"),
                         ("archiver", "fraudstream.history.archiver"),
                         ("trainer", "fraudstream.retrain.service")):  # fmt: skip
        log = tmp_path / f"{name}.log"
        proc = start_archiver(env, log) if name == "archiver" else start_module(module, env, log)
        processes[name] = (proc, log)
    for label in known:  # labels first: reviewers' and chargebacks' verdicts, as of now
        producer.produce(settings.topic_labels, encode(label), key=label.transaction_id.encode())
    assert producer.flush(30) == 0

    # Ten days warm the scorer's state up before the monitor starts, from the decisions'
    # end, as on a scorer already running. In a 20-day world the features that count
    # history are not stationary (a severe feature_psi on card_count_1d after a cold start,
    # and on card_log_seconds_since_last on days 3-12 against a reference of days 8-9, in
    # this test's first runs), so the monitor watches days 10-12, the reference's own.
    _send(producer, settings.topic_transactions, warm)
    answers.await_total(len(warm), 180)
    commit_at_end(
        settings, endpoints.kafka_bootstrap, env["FRAUD_DRIFT_GROUP_ID"], settings.topic_decisions
    )
    monitor_log = tmp_path / "monitor.log"
    processes["monitor"] = (start_module("fraudstream.drift.service", env, monitor_log),
                            monitor_log)  # fmt: skip

    # Before the drift: decided and watched, no trigger.
    _send(producer, settings.topic_transactions, before)
    answers.await_total(len(warm) + len(before), 180)
    await_condition(lambda: "drift monitor metrics on port" in monitor_log.read_text(), 90,
                    what="the monitor to serve /metrics")  # fmt: skip
    port = logged_port(monitor_log, "drift monitor metrics on port")
    await_condition(lambda: _watched(scrape_metrics(port)) >= len(before), 120,
                    what="the monitor to read every pre-drift decision")  # fmt: skip
    assert consume_n(retrain, 1, 2) == [], "a trigger before the drift"

    # The drift: one trigger, then a registered challenger in shadow.
    _send(producer, settings.topic_transactions, drifted)
    answers.await_total(len(warm) + len(before) + len(drifted), 180)
    triggers = consume_n(retrain, 1, 120)
    assert triggers, _logs(processes)
    events = _events(models, {ModelEventType.SHADOW, ModelEventType.RETIRED}, 300)
    assert [e.event for e in events][:1] == [ModelEventType.REGISTERED], _logs(processes)
    challenger = events[0].version
    assert events[-1] == _last(events, challenger), _logs(processes)
    assert events[-1].event is ModelEventType.SHADOW, events[-1].note

    # Later traffic, a chunk at a time, until the challenger is promoted.
    steps: list[ModelEvent] = []
    sent = len(warm) + len(before) + len(drifted)
    while later and not any(e.event is ModelEventType.PROMOTED for e in steps):
        chunk, later = later[:CHUNK], later[CHUNK:]
        _send(producer, settings.topic_transactions, chunk)
        sent += len(chunk)
        answers.await_total(sent, 120)
        steps += _drain(models)
        assert not any(e.event is ModelEventType.RETIRED and e.version == challenger
                       for e in steps), f"{steps}\n{_logs(processes)}"  # fmt: skip
    kinds = [(e.version, e.event) for e in steps]
    assert kinds[:1] == [(challenger, ModelEventType.CANARY)], f"{kinds}\n{_logs(processes)}"
    assert (challenger, ModelEventType.PROMOTED) in kinds, _logs(processes)
    assert (champion, ModelEventType.RETIRED) in kinds
    promoted = next(e for e in steps if e.event is ModelEventType.PROMOTED)
    assert promoted.actor == "trainer"
    assert "canary test at 95%" in promoted.note
    assert Registry(registry_dir).get("fraud", challenger).stage is Stage.CHAMPION

    # The scorer serves the new champion alone (it reloads on the event).
    served: list[Decision] = []
    while later and not (served and all(d.model_version == challenger for d in served)):
        chunk, later = later[:CHUNK], later[CHUNK:]
        _send(producer, settings.topic_transactions, chunk)
        sent += len(chunk)
        served = [d for d in answers.await_total(sent, 120) if d.model_version is not None]
    assert served, "no traffic left to see the new champion serve"
    assert {d.model_version for d in served} == {challenger}

    # Every transaction decided exactly once, through two reloads of the models.
    ids = Counter(d.transaction_id for d in answers.decisions)
    assert consume_n(answers.consumer, 1, 3) == []
    assert len(ids) == sent
    assert set(ids.values()) == {1}
    by_version = Counter(d.model_version for d in answers.decisions)
    assert by_version[champion] > 0
    assert by_version[challenger] > 0
    assert any(d.shadow_model_version == challenger for d in answers.decisions)


def _watched(metrics: str) -> float:
    """Decisions the monitor has read, whatever their outcome."""
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("fraud_drift_records_total{") and 'topic="decisions"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _drain(consumer: Consumer) -> list[ModelEvent]:
    return [ModelEvent.model_validate_json(m.value() or b"") for m in consume_n(consumer, 100, 1)]


def _events(consumer: Consumer, until: set[ModelEventType], timeout_s: float) -> list[ModelEvent]:
    """Model events until one of the kinds in `until` arrives (or the timeout)."""
    got: list[ModelEvent] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not any(e.event in until for e in got):
        got += _drain(consumer)
    return got


def _last(events: list[ModelEvent], version: str) -> ModelEvent:
    return [e for e in events if e.version == version][-1]
