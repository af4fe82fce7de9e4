"""Degrade, don't fail: the scorer with a Redis that dies or freezes, and without a model.

Real parts only: the session's Kafka broker, a private redis-server per test (killed -9,
paused with SIGSTOP, restarted empty on the same port; the shared Redis is never touched)
and the scorer built by `build(settings)`, running in a thread of this process.
A failed block/allow list check alone also degrades the batch (tested with a Redis ACL).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest
import redis
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from fraudstream.contracts import Action, Decision, DecisionPath, Transaction, encode
from fraudstream.localstack import processes, redis_server
from fraudstream.localstack.stack import Endpoints
from fraudstream.registry import Registry
from fraudstream.scoring.core import BatchResult, InputRecord
from fraudstream.scoring.service import build
from fraudstream.scoring.settings import ScorerSettings
from fraudstream.scoring.state import CircuitBreaker
from fraudstream.simulator import SimulationConfig
from fraudstream.trainer import simulated_history
from tests.integration.scorer_support import (
    assert_state_matches_a_clean_pass,
    deployment_env,
    train_small_model,
)
from tests.integration.scorer_support import settings_from_env as _settings

REPO = Path(__file__).resolve().parents[2]
REDIS_TIMEOUT_MS = 25  # the scorer's default per-call budget on the hot path
COOLDOWN_S = CircuitBreaker().cooldown_s  # open -> half-open after this long
TRIP_AFTER = CircuitBreaker().failures  # consecutive failures that open the breaker
OUTAGE_S = 2 * COOLDOWN_S + 0.5  # long enough for half-open probes to fail and re-open
GRACE_S = 0.3  # a batch that loaded its state just before the fault may still say "ml"
# Decision latency (producer timestamp -> decided) during an outage. Measured: 30-150 ms
# typical, worst 50-700 ms on a loaded 2-CPU box (linger, the 20 ms batch wait, Kafka
# transaction commits). An outage adds at most one 25 ms Redis timeout per batch (the
# breaker skips Redis while open). 2 s leaves room for a busy CI machine, yet fails when
# Redis calls block (no timeout) or retry with backoff (redis-py 6's default: 3 retries,
# 1 s base backoff, seconds per failing call).
LATENCY_BOUND_MS = 2000.0
# per batch: at most one timed-out call (25 ms); the rest is GIL and scheduling noise (we
# saw 130 ms with the reader thread busy), far below any retry with backoff.
STATE_STAGE_BOUND_S = 0.5
CAUGHT_UP_MS = LATENCY_BOUND_MS / 2  # warm-up ends when the latest decisions are fresh
PARTITIONS = 3
FEED_PER_TICK, FEED_TICK_S = 6, 0.03  # ~200 transactions/s, in small batches


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with a small, quickly trained champion (a few seconds, not twenty)."""
    root = tmp_path_factory.mktemp("registry")
    assert train_small_model(root).promoted
    return root


@pytest.fixture
def deployment(endpoints: Endpoints, registry_dir: Path, admin: AdminClient) -> dict[str, str]:
    """Environment of one isolated scorer: own topics, group and key prefix."""
    return deployment_env(
        endpoints,
        registry_dir,
        admin,
        FRAUD_TOPIC_PARTITIONS=str(PARTITIONS),
        FRAUD_SCORER_BATCH_MAX="50",
        FRAUD_REDIS_TIMEOUT_MS=str(REDIS_TIMEOUT_MS),
    )


@dataclass
class RedisProcess:
    """A private redis-server on a fixed port that a test may kill, pause and restart."""

    home: Path
    port: int = field(default_factory=processes.free_port)
    pid: int = 0
    starts: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart) the server empty: each incarnation gets a fresh directory."""
        self.starts += 1
        home = self.home / f"run{self.starts}"
        self.pid = redis_server.start(home, self.port)
        up = processes.wait_until(lambda: redis_server.ping(self.port), 15, interval=0.02)
        assert up, processes.tail(home / "redis.log")

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        assert processes.wait_until(lambda: not processes.is_alive(self.pid), 10, interval=0.01)

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def connections_received(self) -> int:
        """Connections the server accepted since it started (this call's included)."""
        with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2) as client:
            return int(cast(dict[str, int], client.info("stats"))["total_connections_received"])

    def deny(self, command: str) -> None:
        """Forbid one command to the default user (Redis stays up for everything else)."""
        with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2) as client:
            client.acl_setuser("default", enabled=True, commands=[f"-{command}"])

    def keys(self) -> int:
        with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2) as client:
            return int(cast(int, client.dbsize()))

    def close(self) -> None:
        if processes.is_running(self.pid, redis_server.MARKER):
            self.resume()  # a stopped process would not act on SIGTERM
            processes.stop(self.pid, redis_server.MARKER, timeout_s=10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.close()


@dataclass(frozen=True)
class BatchStat:
    """What the loop reported for one committed batch."""

    at: float
    size: int
    degraded: bool
    dead_letters: int
    state_s: float


class RunningScorer:
    """The scorer's loop in a thread, with per-batch stats from its `on_batch` hook."""

    def __init__(self, settings: ScorerSettings) -> None:
        self.loop, self.watcher = build(settings)
        self.loop.on_batch = self._on_batch
        self.batches: list[BatchStat] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scorer", daemon=True)

    def _run(self) -> None:
        try:
            self.loop.run(self._stop)
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc

    def _on_batch(self, result: BatchResult, records: Sequence[InputRecord]) -> None:
        self.batches.append(
            BatchStat(time.time(), len(records), result.degraded, len(result.dlq_reasons),
                      result.stage_seconds.get("state", 0.0))
        )  # fmt: skip

    def alive(self) -> bool:
        return self._thread.is_alive() and self.error is None

    def __enter__(self) -> RunningScorer:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_rest: object) -> None:
        self._stop.set()
        self._thread.join(30)
        if exc_type is None:  # never mask the test's own failure
            assert not self._thread.is_alive(), "the scorer loop did not stop within 30 s"
            assert self.error is None, f"the scorer loop crashed: {self.error!r}"


class Feeder:
    """Produces transactions at a steady pace until stopped or out of transactions."""

    def __init__(self, producer: Producer, topic: str, txs: list[Transaction]) -> None:
        self.producer, self.topic, self.txs = producer, topic, txs
        self.produced: list[Transaction] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)

    def _run(self) -> None:
        for start in range(0, len(self.txs), FEED_PER_TICK):
            if self._stop.wait(FEED_TICK_S):
                return
            for tx in self.txs[start : start + FEED_PER_TICK]:
                self.producer.produce(self.topic, encode(tx), key=tx.card_token.encode())
                self.produced.append(tx)
            self.producer.poll(0)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> list[Transaction]:
        """Stop feeding; everything produced is flushed; returns what was produced."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(10)
        assert not self._thread.is_alive()
        assert self.producer.flush(30) == 0
        return self.produced

    def __enter__(self) -> Feeder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_rest: object) -> None:
        if exc_type is None:
            self.stop()
        else:  # never mask the test's own failure
            self._stop.set()


class DecisionLog:
    """Every decision read (read_committed) so far; awaits conditions over them."""

    def __init__(self, consumer: Consumer, scorer: RunningScorer) -> None:
        self.consumer = consumer
        self.scorer = scorer
        self.decisions: list[Decision] = []

    def await_(
        self, condition: Callable[[list[Decision]], bool], what: str, timeout_s: float
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition(self.decisions):
            assert self.scorer.alive(), f"the scorer stopped while waiting for {what}"
            assert time.monotonic() < deadline, f"not reached in {timeout_s} s: {what}"
            for message in self.consumer.consume(num_messages=500, timeout=0.1):
                error = message.error()
                assert error is None, f"consumer error: {error}"
                self.decisions.append(Decision.model_validate_json(message.value() or b""))

    def after(self, at: float) -> list[Decision]:
        return [d for d in self.decisions if d.decided_at.timestamp() > at]


@dataclass
class Outage:
    """Times and outputs of one fault-and-heal run."""

    decisions: list[Decision]
    produced: list[Transaction]
    batches: list[BatchStat]
    fault_at: float
    heal_at: float
    recovered_at: float
    breaker_state: int

    def during(self) -> list[Decision]:
        """Decisions made while Redis was unavailable (after a short grace)."""
        return [
            d for d in self.decisions
            if self.fault_at + GRACE_S < d.decided_at.timestamp() < self.heal_at
        ]  # fmt: skip

    def batches_during(self) -> list[BatchStat]:
        return [b for b in self.batches if self.fault_at + GRACE_S < b.at < self.heal_at]


def _run_outage(
    env: dict[str, str],
    producer: Producer,
    consumer: Consumer,
    fault: Callable[[], None],
    heal: Callable[[], None],
) -> Outage:
    """Traffic flows; warm up on Redis, inject the fault, heal it, await recovery, drain."""
    settings = _settings(env)
    txs = simulated_history(SimulationConfig(seed=61, n_transactions=4000, days=2)).transactions
    feeder = Feeder(producer, settings.topic_transactions, txs)
    with RunningScorer(settings) as scorer, feeder:
        log = DecisionLog(consumer, scorer)
        log.await_(lambda _ds: len(scorer.loop.assigned) == PARTITIONS,
                   "the scorer's partition assignment", timeout_s=30)  # fmt: skip
        feeder.start()  # now: a backlog from the group join would inflate latencies

        def warm(ds: list[Decision]) -> bool:
            """Decided with Redis, and caught up: the latest decisions are fresh."""
            recent = ds[-30:]
            healthy = sum(d.path is DecisionPath.ML for d in ds) >= 100
            return healthy and all(d.latency_ms < CAUGHT_UP_MS for d in recent)

        log.await_(warm, "100 fresh decisions with Redis up", timeout_s=30)
        fault_at = time.time()
        fault()
        log.await_(lambda _ds: bool(log.after(fault_at + OUTAGE_S)),
                   f"decisions {OUTAGE_S} s into the outage", timeout_s=OUTAGE_S + 10)  # fmt: skip
        heal_at = time.time()
        heal()

        # A rule can decide on the rules path even while degraded: only "ml" proves state.
        def healthy(_ds: list[Decision]) -> bool:
            return any(d.path is DecisionPath.ML for d in log.after(heal_at))

        log.await_(healthy, "an ml decision after healing", timeout_s=COOLDOWN_S + 10)
        recovered_at = min(
            d.decided_at.timestamp() for d in log.after(heal_at) if d.path is DecisionPath.ML
        )
        log.await_(lambda _ds: len(log.after(recovered_at)) >= 150,
                   "150 decisions after recovery", timeout_s=20)  # fmt: skip
        produced = feeder.stop()
        expected = {tx.transaction_id for tx in produced}
        log.await_(lambda ds: {d.transaction_id for d in ds} >= expected,
                   "a decision for every produced transaction", timeout_s=30)  # fmt: skip
        state = scorer.loop.scorer.state
        assert state is not None
        breaker_state = state.breaker.state
    return Outage(
        log.decisions, produced, scorer.batches, fault_at, heal_at, recovered_at, breaker_state
    )


def _assert_degraded_then_recovered(outage: Outage, env: dict[str, str]) -> None:
    """Exactly once throughout, degraded while Redis is gone, fast, and then healthy again;
    and no state update lost: the degraded decisions' updates were replayed from the log."""
    ids = Counter(d.transaction_id for d in outage.decisions)
    assert set(ids) == {tx.transaction_id for tx in outage.produced}
    assert max(ids.values()) == 1, f"duplicates: {[i for i, c in ids.items() if c > 1][:5]}"
    assert sum(b.dead_letters for b in outage.batches) == 0
    assert sum(b.size for b in outage.batches) == len(outage.produced)  # nothing redone

    during = outage.during()
    assert len(during) >= 100, f"only {len(during)} decisions during the outage"
    # No card state: every model decision is degraded; a decisive rule on event-only
    # fields (HARD_LIMIT on the amount) may still decide on the rules path.
    not_degraded = [d for d in during if d.path is not DecisionPath.DEGRADED]
    assert all(d.path is DecisionPath.RULES for d in not_degraded), not_degraded[:3]
    assert len(not_degraded) <= len(during) // 50, f"{len(not_degraded)} rule decisions"
    worst = max(d.latency_ms for d in during)
    assert worst < LATENCY_BOUND_MS, f"decision latency {worst:.0f} ms during the outage"
    stamps = sorted(d.decided_at.timestamp() for d in during)
    gap = max(b - a for a, b in itertools.pairwise(stamps))
    assert gap < 1.5, f"no decision for {gap:.2f} s: consumption stalled during the outage"
    batches = outage.batches_during()
    assert all(b.degraded for b in batches)
    slowest = max(b.state_s for b in batches)
    assert slowest < STATE_STAGE_BOUND_S, f"a state load took {slowest * 1000:.0f} ms"

    # half-open -> closed by the first probe after Redis is back: within a cooldown, or
    # two if that probe met Redis still waking up
    assert outage.recovered_at - outage.heal_at < 2 * COOLDOWN_S + 1
    after = [d for d in outage.decisions if d.decided_at.timestamp() > outage.recovered_at]
    assert sum(d.path is DecisionPath.ML for d in after) >= len(after) * 0.9
    # ... and stays closed: a 25 ms budget on a busy box may miss now and then (one
    # degraded batch), but never TRIP_AFTER times in a row
    runs = [b.degraded for b in outage.batches if b.at > outage.recovered_at]
    longest = max((len(list(g)) for k, g in itertools.groupby(runs) if k), default=0)
    assert longest < TRIP_AFTER, f"{longest} degraded batches in a row after recovery"
    assert outage.breaker_state == CircuitBreaker.CLOSED
    assert_state_matches_a_clean_pass(env)


def test_redis_killed_mid_traffic_degrades_then_recovers_when_restarted_empty(
    deployment: dict[str, str],
    own_redis: RedisProcess,
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
) -> None:
    env = {**deployment, "REDIS_URL": own_redis.url}
    outage = _run_outage(
        env, make_producer(), make_consumer(env["FRAUD_TOPIC_DECISIONS"]),
        fault=own_redis.kill, heal=own_redis.start,
    )  # fmt: skip
    _assert_degraded_then_recovered(outage, env)
    assert own_redis.starts == 2
    assert own_redis.keys() > 0, "no state was written to the restarted Redis"


def test_redis_restarted_empty_is_rebuilt_in_the_background_while_degraded(
    deployment: dict[str, str],
    own_redis: RedisProcess,
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A gap too large to close before the next batch (inline limit 50 offsets here) is
    rebuilt by a background job while that partition's decisions are degraded; the
    scorer returns to the full path by itself and no update is lost."""
    env = {**deployment, "REDIS_URL": own_redis.url, "FRAUD_STATE_INLINE_CATCH_UP_MAX": "50"}
    with caplog.at_level(logging.INFO, logger="fraudstream.scoring.sync"):
        outage = _run_outage(
            env, make_producer(), make_consumer(env["FRAUD_TOPIC_DECISIONS"]),
            fault=own_redis.kill, heal=own_redis.start,
        )  # fmt: skip
    ids = Counter(d.transaction_id for d in outage.decisions)
    assert set(ids) == {tx.transaction_id for tx in outage.produced}
    assert max(ids.values()) == 1
    assert any(d.path is DecisionPath.DEGRADED for d in outage.during())
    assert "catching up in the background" in caplog.text
    assert "background catch-up reached offset" in caplog.text
    last = sorted(outage.decisions, key=lambda d: d.decided_at)[-30:]
    assert all(d.path is not DecisionPath.DEGRADED for d in last), (
        f"never back to the full path:\n{caplog.text[-3000:]}"
    )
    assert_state_matches_a_clean_pass(env)


def test_redis_paused_costs_milliseconds_per_batch_and_no_retry_storm(
    deployment: dict[str, str],
    own_redis: RedisProcess,
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
) -> None:
    env = {**deployment, "REDIS_URL": own_redis.url}
    before: list[int] = []

    def pause() -> None:
        before.append(own_redis.connections_received())
        own_redis.pause()

    outage = _run_outage(
        env, make_producer(), make_consumer(env["FRAUD_TOPIC_DECISIONS"]),
        fault=pause, heal=own_redis.resume,
    )  # fmt: skip
    _assert_degraded_then_recovered(outage, env)
    # An attempt on a frozen Redis times out after 25 ms and drops its connection; the
    # kernel still accepts the next one, and Redis counts them all once it runs again. The
    # breaker allows TRIP_AFTER attempts, then one probe per cooldown, then one reconnect
    # on recovery: a handful of connections, not one (or several) per batch.
    attempts = own_redis.connections_received() - before[0] - 1  # minus this call's own
    outage_s = outage.heal_at - outage.fault_at
    budget = TRIP_AFTER + math.ceil(outage_s / COOLDOWN_S) + 2
    batches = outage.batches_during()
    assert 1 <= attempts <= budget, f"{attempts} Redis connections in the pause (<= {budget})"
    assert len(batches) > 2 * budget, f"only {len(batches)} batches: breaker not exercised"


def test_decisions_made_without_the_lists_are_marked_degraded(
    deployment: dict[str, str],
    own_redis: RedisProcess,
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
) -> None:
    own_redis.deny("smismember")  # state reads and writes work; every list check fails
    settings = _settings({**deployment, "REDIS_URL": own_redis.url})
    txs = simulated_history(SimulationConfig(seed=81, n_transactions=100, days=2)).transactions
    producer = make_producer()
    for tx in txs:
        producer.produce(settings.topic_transactions, encode(tx), key=tx.card_token.encode())
    assert producer.flush(30) == 0
    with RunningScorer(settings) as scorer:
        log = DecisionLog(make_consumer(settings.topic_decisions), scorer)
        log.await_(lambda ds: len(ds) >= len(txs), "a decision per transaction", timeout_s=60)
    assert own_redis.keys() > 0, "card state should still be saved"
    unchecked = [d for d in log.decisions if d.path is DecisionPath.ML]
    assert not unchecked, f"{len(unchecked)} ml decisions made without block/allow lists"


def test_model_missing_scores_rules_only(
    deployment: dict[str, str],
    tmp_path: Path,
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
) -> None:
    empty = tmp_path / "registry"
    empty.mkdir()
    env = {**deployment, "FRAUD_REGISTRY_DIR": str(empty)}
    _assert_rules_only(_settings(env), make_producer(), make_consumer)


def test_model_corrupt_scores_rules_only(
    deployment: dict[str, str],
    tmp_path: Path,
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
) -> None:
    registry = tmp_path / "registry"
    shutil.copytree(deployment["FRAUD_REGISTRY_DIR"], registry)
    champion = Registry(registry).champion("fraud")
    assert champion is not None, "the copy must still name a champion"
    onnx = champion.path / "lightgbm.onnx"
    onnx.chmod(0o644)  # registry files are read-only
    onnx.write_bytes(b"this is not an ONNX model" * 40)
    env = {**deployment, "FRAUD_REGISTRY_DIR": str(registry)}
    _assert_rules_only(_settings(env), make_producer(), make_consumer)


def _assert_rules_only(
    settings: ScorerSettings, producer: Producer, make_consumer: Callable[..., Consumer]
) -> None:
    """Without a loadable champion: every input decided on the rules path, no crash."""
    txs = simulated_history(SimulationConfig(seed=71, n_transactions=300, days=2)).transactions
    for tx in txs:
        producer.produce(settings.topic_transactions, encode(tx), key=tx.card_token.encode())
    assert producer.flush(30) == 0
    with RunningScorer(settings) as scorer:
        assert scorer.watcher.current.champion is None
        log = DecisionLog(make_consumer(settings.topic_decisions), scorer)
        log.await_(lambda ds: len(ds) >= len(txs), "a decision per transaction", timeout_s=60)
    ids = Counter(d.transaction_id for d in log.decisions)
    assert set(ids) == {tx.transaction_id for tx in txs}
    assert max(ids.values()) == 1
    assert sum(b.dead_letters for b in scorer.batches) == 0
    assert sum(b.size for b in scorer.batches) == len(txs)  # nothing redone
    assert all(d.path is DecisionPath.RULES for d in log.decisions)
    assert all(d.score is None and d.model_version is None for d in log.decisions)
    assert all("MODEL_UNAVAILABLE" in {r.code for r in d.reasons} for d in log.decisions)
    # the conservative default when no rule decides: review above the amount, else approve
    amounts = {tx.transaction_id: tx.amount for tx in txs}
    limit = settings.rules_only_review_amount
    for d in log.decisions:
        if [r.code for r in d.reasons] == ["MODEL_UNAVAILABLE"]:
            expected = Action.REVIEW if amounts[d.transaction_id] > limit else Action.APPROVE
            assert d.action is expected, d
