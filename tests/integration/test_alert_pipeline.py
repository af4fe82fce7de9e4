"""The alert pipeline end to end: Prometheus and Alertmanager (Debian's packages) scrape a
real scorer, with our rules and routing; Redis is stopped under traffic, FraudScorerDegraded
fires and reaches a webhook as a page; Redis comes back and the alert resolves.

Only the timings are the test's own: a 1 s scrape and evaluation interval, every `for:`
cut to 3 s and Alertmanager's group timers to 1 s, so the test takes seconds, not minutes.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from fraudstream.contracts import encode
from fraudstream.localstack import processes, redis_server
from fraudstream.localstack.stack import Endpoints
from fraudstream.simulator import SimulationConfig
from fraudstream.trainer import simulated_history
from tests.integration.alerting_support import monitoring, webhook_receiver
from tests.integration.scorer_support import deployment_env, scrape_metrics, start_module
from tests.waiting import await_condition

ALERT = "FraudScorerDegraded"
TX_PER_TICK, TICK_S = 5, 0.05  # ~100 transactions/s: every second has batches to judge


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A private redis-server (the session's shared one is never stopped)."""
    port, home = processes.free_port(), tmp_path / "redis"
    pid = redis_server.start(home, port)
    redis_server.await_ping(pid, port, home, 30)
    yield port, home
    processes.stop(pid, redis_server.MARKER)


def _feed(producer: Producer, topic: str, stop: threading.Event) -> None:
    txs = simulated_history(SimulationConfig(seed=8, n_transactions=20_000, days=2)).transactions
    for start in range(0, len(txs), TX_PER_TICK):
        if stop.wait(TICK_S):
            break
        for tx in txs[start : start + TX_PER_TICK]:
            producer.produce(topic, encode(tx), key=tx.card_token.encode())
        producer.poll(0)
    producer.flush(10)


def test_redis_outage_pages_and_resolves(  # noqa: PLR0917 - fixtures
    endpoints: Endpoints, small_registry: Path, admin: AdminClient, own_redis: tuple[int, Path],
    make_producer: Callable[[], Producer], tmp_path: Path,
) -> None:  # fmt: skip
    redis_port, redis_home = own_redis
    metrics_port = processes.free_port()
    env = deployment_env(endpoints, small_registry, admin,
                         REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
                         FRAUD_METRICS_PORT=str(metrics_port))  # fmt: skip
    scorer = start_module("fraudstream.scoring.service", env, tmp_path / "scorer.log")
    stop = threading.Event()
    feeder = threading.Thread(
        target=_feed,
        args=(make_producer(), env["FRAUD_TOPIC_TRANSACTIONS"], stop),
        name="feeder",
        daemon=True,
    )
    redis_pid: int | None = None
    try:
        with (webhook_receiver() as (url, hook),
              monitoring(tmp_path / "monitoring", {f"127.0.0.1:{metrics_port}": "scorer"},
                         url)):  # fmt: skip
            await_condition(lambda: processes.port_open(metrics_port), 60, "the scorer's /metrics")
            feeder.start()
            # Healthy first: the scorer decides with Redis and nothing pages.
            await_condition(lambda: _metric(metrics_port, "fraud_decisions_total") > 200, 90,
                            "the scorer to decide a few hundred transactions")  # fmt: skip
            assert hook.alerts(ALERT, "firing") == []

            _stop_redis(redis_port)
            await_condition(lambda: hook.alerts(ALERT, "firing"), 60,
                            f"{ALERT} to reach the webhook")  # fmt: skip
            receiver, alert = hook.alerts(ALERT, "firing")[0]
            assert receiver == "page"
            assert alert["labels"]["severity"] == "critical"
            assert alert["labels"]["dependency"] == "redis"
            assert alert["labels"]["instance"] == f"127.0.0.1:{metrics_port}"
            assert alert["annotations"]["runbook_url"] == f"docs/runbooks/{ALERT}.md"

            redis_pid = redis_server.start(redis_home, redis_port)
            redis_server.await_ping(redis_pid, redis_port, redis_home, 30)
            await_condition(lambda: hook.alerts(ALERT, "resolved"), 90,
                            f"{ALERT} to resolve after Redis came back")  # fmt: skip
            assert scorer.poll() is None, "the scorer must ride out the outage"
    finally:
        stop.set()
        if feeder.ident is not None:
            feeder.join(15)
        scorer.terminate()
        scorer.wait(30)
        if redis_pid is not None:
            processes.stop(redis_pid, redis_server.MARKER)


def _stop_redis(port: int) -> None:
    """Shut the private Redis down (the fixture's pid then finds nothing to stop)."""
    with contextlib.suppress(redis.ConnectionError):  # SHUTDOWN drops its connection
        redis.Redis(host="127.0.0.1", port=port).shutdown(nosave=True)
    await_condition(lambda: not processes.port_open(port), 15, "Redis to stop")


def _metric(port: int, name: str) -> float:
    """Sum of a metric's samples on a local /metrics (0 when absent)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in scrape_metrics(port).splitlines()
               if line.startswith((name + "{", name + " ")))  # fmt: skip
