"""A backtest of the champion on what the real scorer and archiver wrote reproduces the
decisions the scorer made: same actions, scores equal within float32 tolerance."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from fraudstream.cli import cli
from fraudstream.contracts import Label, LabelSource, Verdict, encode
from fraudstream.localstack.stack import Endpoints
from fraudstream.simulator import SimulationConfig
from fraudstream.trainer import simulated_history
from tests.integration.archive_support import (
    archived_rows,
    archiver_env,
    start_archiver,
    stop_archiver,
)
from tests.integration.crash import start_scorer
from tests.integration.scorer_support import settings_from_env
from tests.waiting import await_condition

pytestmark = pytest.mark.integration


def test_a_backtest_of_the_champion_reproduces_the_scorers_decisions(
    endpoints: Endpoints,
    admin: AdminClient,
    tmp_path: Path,
    small_registry: Path,
    make_producer: Callable[..., Producer],
) -> None:
    # One input partition: with several, the order inside one scorer batch of a merchant's
    # events from different partitions is not archived (see history/backtest.py).
    env = archiver_env(endpoints, admin, tmp_path, small_registry, FRAUD_TOPIC_PARTITIONS="1")
    settings = settings_from_env(env)
    history = simulated_history(SimulationConfig(seed=41, n_transactions=1500, days=2))
    root = tmp_path / "archive"
    scorer_log, archiver_log = tmp_path / "scorer.log", tmp_path / "archiver.log"
    scorer = start_scorer(env, scorer_log, fault=None)
    archiver = start_archiver(env, archiver_log)
    producer = make_producer()
    try:
        for tx in history.transactions:
            producer.produce(settings.topic_transactions, encode(tx), key=tx.card_token.encode())
            producer.poll(0)
        assert producer.flush(30) == 0

        def archived(topic: str) -> int:
            return len(archived_rows(root).get(topic, []))

        n = len(history.transactions)
        await_condition(lambda: archived(settings.topic_decisions) >= n, 120)
        # Labels only once everything is decided: the backtest counts a label from when it
        # reached Kafka, the scorer from when its label thread folded it a moment later.
        frauds = [tx for tx, y in zip(history.transactions, history.y.tolist(), strict=True) if y]
        for tx in frauds:
            label = Label(
                transaction_id=tx.transaction_id, verdict=Verdict.FRAUD,
                source=LabelSource.CHARGEBACK, labelled_at=tx.event_time + timedelta(days=1),
                card_token=tx.card_token, merchant_id=tx.merchant_id, event_time=tx.event_time,
            )  # fmt: skip
            producer.produce(
                settings.topic_labels, encode(label), key=label.transaction_id.encode()
            )
        assert producer.flush(30) == 0
        await_condition(lambda: archived(settings.topic_labels) >= len(frauds), 60)
        stop_archiver(archiver, archiver_log, started=1)
    finally:
        for proc in (scorer, archiver):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)

    plot = tmp_path / "report.png"
    run = CliRunner().invoke(
        cli, ["backtest", "--archive", str(root), "--days", "30", "--json", "--plot", str(plot)],
        env=env, catch_exceptions=False,
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    report = json.loads(run.stdout)
    agreement = report["agreement"]
    assert report["transactions"] == n
    assert agreement["compared"] + agreement["degraded_actual"] == n
    assert agreement["degraded_actual"] <= 0.05 * n, scorer_log.read_text()[-3000:]
    assert agreement["same_action"] == agreement["compared"]
    assert agreement["scores_within_tolerance"] == agreement["scores_compared"] > 0.9 * n
    candidate = report["sides"]["candidate"]
    assert candidate["fraud"] == len(frauds) > 0
    assert report["model_version"] is not None
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "replayed 1,500 transactions" in run.stderr
