"""The scorer against the real broker and Redis: one output per input, across kill -9."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from fraudstream.contracts import Decision, Transaction, decode, encode
from fraudstream.localstack.stack import Endpoints
from fraudstream.registry import Registry, Stage
from fraudstream.scoring.runner import ScorerLoop
from fraudstream.scoring.service import Observability, build
from fraudstream.simulator import SimulationConfig
from fraudstream.trainer import simulated_history
from tests.integration import crash
from tests.integration.conftest import consume_n
from tests.integration.scorer_support import (
    assert_state_matches_a_clean_pass,
    deployment_env,
    input_log,
    train_small_model,
)
from tests.integration.scorer_support import (
    settings_from_env as _settings,
)
from tests.waiting import await_condition

REPO = Path(__file__).resolve().parents[2]
LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with a small champion trained on simulated history."""
    root = tmp_path_factory.mktemp("registry")
    assert train_small_model(root).promoted
    return root


@pytest.fixture
def scorer_env(endpoints: Endpoints, registry_dir: Path, admin: AdminClient) -> dict[str, str]:
    """Environment of one isolated scorer deployment: own topics, group and Redis prefix."""
    return deployment_env(endpoints, registry_dir, admin)


def _transactions(n: int, seed: int) -> list[Transaction]:
    history = simulated_history(SimulationConfig(seed=seed, n_transactions=n, days=2))
    return history.transactions


def _produce(
    producer: Producer, topic: str, txs: list[Transaction], rate: float | None = None
) -> None:
    start = time.monotonic()
    for i, tx in enumerate(txs):
        producer.produce(topic, encode(tx), key=tx.card_token.encode())
        producer.poll(0)
        if rate is not None and (ahead := start + i / rate - time.monotonic()) > 0.005:
            time.sleep(ahead)  # paces the feed (not a synchronisation)
    assert producer.flush(30) == 0


def _outputs(make_consumer: Callable[..., Consumer], topic: str, n: int) -> list[bytes]:
    return [m.value() or b"" for m in consume_n(make_consumer(topic), n, timeout_s=90)]


@contextmanager
def _running(loop: ScorerLoop) -> Iterator[None]:
    """The loop on a thread for the block; then stopped, its batches in flight finished."""
    stop = threading.Event()
    worker = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join(30)
    assert not worker.is_alive()


def _assert_exactly_once(decided: list[str], txs: list[Transaction]) -> None:
    """Every transaction was decided, and none twice."""
    ids = Counter(decided)
    assert set(ids) == {tx.transaction_id for tx in txs}
    assert max(ids.values()) == 1


def test_every_input_yields_one_decision_or_one_dead_letter(
    scorer_env: dict[str, str],
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
) -> None:
    settings = _settings(scorer_env)
    txs = _transactions(400, seed=31)
    producer = make_producer()
    _produce(producer, settings.topic_transactions, txs)
    bad = [
        b"{not json",
        orjson.dumps({**txs[0].model_dump(mode="json"), "transaction_id": "pan-1",
                      "card_token": "4111111111111111"}),
        b"x" * (settings.max_message_bytes + 1),
    ]  # fmt: skip
    for value in bad:
        producer.produce(settings.topic_transactions, value, key=b"bad")
    # The same transaction again, as a producer's retry sends it: a duplicate.
    producer.produce(settings.topic_transactions, encode(txs[1]), key=txs[1].card_token.encode())
    bad.append(encode(txs[1]))
    producer.flush(30)

    loop, watcher = build(settings)
    model = watcher.current.champion
    assert model is not None
    observed = Observability(loop)
    with _running(loop):
        decisions = _outputs(make_consumer, settings.topic_decisions, len(txs))
        dead = _outputs(make_consumer, settings.topic_dlq, len(bad))
    _assert_exactly_once([orjson.loads(d)["transaction_id"] for d in decisions], txs)
    reasons = sorted(orjson.loads(d)["reason"] for d in dead)
    assert reasons == ["duplicate_id", "invalid_json", "oversize", "pan_detected"]
    assert all(b"4111111111111111" not in d for d in dead)
    parsed = [decode(Decision, d, LIMIT) for d in decisions]
    assert all(isinstance(p, Decision) for p in parsed)
    paths = Counter(p.path.value for p in parsed if isinstance(p, Decision))
    assert paths["ml"] > 0
    assert all(p.model_version == model.version for p in parsed
               if isinstance(p, Decision) and p.path.value == "ml")  # fmt: skip
    metric = observed.registry.get_sample_value
    decided = sum(
        metric("fraud_decisions_total", {"action": a, "path": p}) or 0.0
        for a in ("approve", "review", "decline") for p in ("rules", "ml", "degraded")
    )  # fmt: skip
    assert decided == len(txs)
    assert metric("fraud_dlq_records_total", {"reason": "pan_detected"}) == 1.0
    assert metric("fraud_consumer_lag_records") == 0.0
    assert (metric("fraud_end_to_end_latency_seconds_count") or 0) == len(txs) + len(bad)


def _set_topic_config(admin: AdminClient, topic: str, key: str, value: str) -> None:
    update = ConfigResource(
        ResourceType.TOPIC, topic,
        incremental_configs=[ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)],
    )  # fmt: skip
    admin.incremental_alter_configs([update])[update].result()


def test_refused_transactions_roll_back_and_are_replayed_exactly_once(
    scorer_env: dict[str, str],
    admin: AdminClient,
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
) -> None:
    """The decisions topic refuses every record for a while: each transaction fails, the
    loop aborts it, rewinds past the batch scored meanwhile, and reads it again. Records it
    isolated meanwhile (batches halved until one record failed alone twice) are dead-lettered
    as poison; every input still has exactly one output."""
    settings = _settings(scorer_env)
    txs = _transactions(600, seed=33)
    loop, _watcher = build(settings)
    observed = Observability(loop)
    metric = observed.registry.get_sample_value
    with _running(loop):
        await_condition(lambda: len(loop.assigned) == 3)  # started: it read the topics' limits
        # Above a transaction marker batch (~80 bytes: aborts must still be written), below
        # a decision (~400 bytes): a limit lowered while the scorer runs.
        _set_topic_config(admin, settings.topic_decisions, "max.message.bytes", "200")
        _produce(make_producer(), settings.topic_transactions, txs)
        await_condition(
            lambda: (metric("fraud_kafka_transactions_total", {"outcome": "aborted"}) or 0) >= 3
        )
        _set_topic_config(admin, settings.topic_decisions, "max.message.bytes", "1048588")
        reader = make_consumer(settings.topic_decisions)
        dlq = make_consumer(settings.topic_dlq)
        txs_by_offset = {
            (p, o): orjson.loads(v or b"")["transaction_id"]
            for p, records in input_log(scorer_env).items()
            for o, v, _ts in records
        }
        decided: list[str] = []
        deadline = time.monotonic() + 90
        while len(decided) < len(txs) and time.monotonic() < deadline:
            decided += [
                orjson.loads(m.value() or b"")["transaction_id"]
                for m in consume_n(reader, len(txs) - len(decided), timeout_s=1)
            ]
            for letter in consume_n(dlq, len(txs), timeout_s=0.2):
                body = orjson.loads(letter.value() or b"")
                assert body["reason"] == "poison", body["reason"]
                decided.append(txs_by_offset[(body["partition"], body["offset"])])
        assert consume_n(reader, 1, timeout_s=3) == []  # and nothing more arrives
    _assert_exactly_once(decided, txs)


def _start_scorer(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "fraudstream.scoring.service"],
            env={**os.environ, **env}, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("seed", "delivery", "partitions"),
    [(1, "exactly_once", 3), (2, "exactly_once", 3), (3, "at_least_once", 3),
     (4, "at_least_once", 1)],
)  # fmt: skip
def test_kill_minus_nine_loses_and_doubles_nothing(  # noqa: PLR0917 - pytest fixtures
    seed: int,
    delivery: str,
    partitions: int,
    endpoints: Endpoints,
    registry_dir: Path,
    admin: AdminClient,
    tmp_path: Path,
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
) -> None:
    """kill -9, SIGTERM, kill -9 at random moments of the traffic (tests/integration/crash.py).
    At least once on one partition, a repeat must equal the first decision."""
    env = deployment_env(endpoints, registry_dir, admin, FRAUD_SCORER_DELIVERY=delivery,
                         FRAUD_TOPIC_PARTITIONS=str(partitions))  # fmt: skip
    crash.run(env, make_producer, make_consumer, tmp_path, seed=seed)


def test_a_steady_run_on_a_busy_machine_degrades_nothing(
    scorer_env: dict[str, str],
    tmp_path: Path,
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
) -> None:
    """300 tx/s for 20 s with no fault, on whatever else this machine runs: no degraded
    decision (the default Redis timeout holds) and state equal to a clean pass."""
    env = {**scorer_env, "FRAUD_SCORER_BATCH_WAIT_MS": "5"}
    crash.run(env, make_producer, make_consumer, tmp_path, seed=7, stops=(), n=6000, rate=300)


def test_a_kill_after_the_last_commit_leaves_redis_to_the_next_scorer(
    scorer_env: dict[str, str],
    tmp_path: Path,
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
) -> None:
    """All traffic is in before the scorer starts; it commits one batch of all of it and
    dies before the Redis write. The next scorer has nothing to score: it must bring Redis
    to the end of the log on its idle ticks (crash_stress found the harness stopping it
    before it was even assigned, while the dead member's session ran out)."""
    stops = (crash.Stop(fault="after_commit_before_save:1"),)
    crash.run(scorer_env, make_producer, make_consumer, tmp_path, seed=13, stops=stops, n=300,
              rate=1e6)  # fmt: skip


@pytest.mark.parametrize("point", crash.FAULT_POINTS)
def test_kill_at_each_fault_point_loses_and_doubles_nothing(
    point: str,
    scorer_env: dict[str, str],
    tmp_path: Path,
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
) -> None:
    """kill -9 at a chosen point of the 4th batch, then of the 3rd after the restart: before
    the commit, mid-produce, after the commit but before the Redis write, after it."""
    env = {**scorer_env, "FRAUD_SCORER_BATCH_MAX": "100"}  # many batches, many points
    stops = (crash.Stop(fault=f"{point}:4"), crash.Stop(fault=f"{point}:3"))
    crash.run(env, make_producer, make_consumer, tmp_path, seed=11, stops=stops, n=1500)


def test_hot_swap_shadow_then_promote_without_restart_or_loss(
    scorer_env: dict[str, str],
    registry_dir: Path,
    tmp_path: Path,
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
) -> None:
    registry_copy = tmp_path / "registry"
    shutil.copytree(registry_dir, registry_copy)
    settings = _settings({**scorer_env, "FRAUD_REGISTRY_DIR": str(registry_copy)})
    registry = Registry(registry_copy)
    (first,) = registry.list("fraud")
    second = train_small_model(registry_copy, train_seed=2).version
    loop, watcher = build(settings)
    watcher.start()
    producer = make_producer()
    reader = make_consumer(settings.topic_decisions)
    txs = _transactions(900, seed=50)

    def phase(batch: list[Transaction]) -> list[dict[str, object]]:
        _produce(producer, settings.topic_transactions, batch)
        return [orjson.loads(m.value() or b"") for m in consume_n(reader, len(batch), 60)]

    def announce(version: str, stage: Stage) -> None:
        event = registry.set_stage("fraud", version, stage, actor="test")
        _produce_raw(producer, settings.topic_models, b"fraud", encode(event))

    try:
        with _running(loop):
            before = phase(txs[:300])
            announce(second.version, Stage.SHADOW)
            await_condition(lambda: watcher.current.shadow is not None)
            shadowed = phase(txs[300:600])
            announce(second.version, Stage.CHAMPION)
            await_condition(lambda: watcher.current.champion is not None
                   and watcher.current.champion.version == second.version)  # fmt: skip
            after = phase(txs[600:])
    finally:
        watcher.stop()
    assert {d["model_version"] for d in before if d["path"] == "ml"} == {first.version}
    assert {d["shadow_model_version"] for d in shadowed} == {second.version}
    assert all(isinstance(d["shadow_score"], float) for d in shadowed)
    assert {d["model_version"] for d in shadowed if d["path"] == "ml"} == {first.version}
    assert {d["model_version"] for d in after if d["path"] == "ml"} == {second.version}
    _assert_exactly_once([str(d["transaction_id"]) for d in before + shadowed + after], txs)


def _produce_raw(producer: Producer, topic: str, key: bytes, value: bytes) -> None:
    producer.produce(topic, value, key=key)
    assert producer.flush(30) == 0


def test_rebalance_while_instances_join_and_leave(
    scorer_env: dict[str, str],
    tmp_path: Path,
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
) -> None:
    settings = _settings(scorer_env)
    txs = _transactions(3000, seed=60)
    producer = make_producer()
    feeder = threading.Thread(
        target=_produce, args=(producer, settings.topic_transactions, txs), daemon=True
    )
    reader = make_consumer(settings.topic_decisions)
    first = _start_scorer({**scorer_env, "FRAUD_SCORER_INSTANCE": "a"}, tmp_path / "a.log")
    feeder.start()
    seen = [m.value() or b"" for m in consume_n(reader, 500, timeout_s=60)]
    second = _start_scorer({**scorer_env, "FRAUD_SCORER_INSTANCE": "b"}, tmp_path / "b.log")
    seen += [m.value() or b"" for m in consume_n(reader, 1000, timeout_s=60)]
    first.send_signal(signal.SIGTERM)  # leaves: its partitions move to the other instance
    assert first.wait(30) == 0
    feeder.join(60)
    try:
        seen += [m.value() or b"" for m in consume_n(reader, len(txs) - len(seen), 120)]
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    _assert_exactly_once([orjson.loads(v)["transaction_id"] for v in seen], txs)
    for name in ("a.log", "b.log"):
        assert "assigned" in (tmp_path / name).read_text()  # both took part
    assert not [v for v in seen if orjson.loads(v)["path"] == "degraded"]
    assert_state_matches_a_clean_pass(scorer_env)  # shared merchants: no lost update


def test_a_paused_instance_that_wakes_after_a_rebalance_writes_nothing_stale(
    scorer_env: dict[str, str],
    tmp_path: Path,
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
) -> None:
    """Instance a freezes itself (SIGSTOP) with a transaction open: outputs produced, offsets
    not sent. Instance b, started then, gets every partition once a's session lapses, and
    every decision reaches read_committed readers while a stays frozen: the broker aborts
    the frozen transaction after the scorer's transaction timeout (20 s), not librdkafka's
    60 s. Woken, the zombie is fenced and its Redis state, written only after a commit,
    stays out."""
    settings = _settings(scorer_env)
    txs = _transactions(3000, seed=62)
    producer = make_producer()
    feeder = threading.Thread(
        target=_produce, args=(producer, settings.topic_transactions, txs, 300.0), daemon=True
    )
    reader = make_consumer(settings.topic_decisions)
    logs = {name: tmp_path / f"{name}.log" for name in ("a", "b")}
    a_env = {**scorer_env, "FRAUD_SCORER_INSTANCE": "a",
             "FRAUD_FAULT_POINT": "before_commit:10:stop"}  # fmt: skip
    a = _start_scorer(a_env, logs["a"])
    b: subprocess.Popen[bytes] | None = None
    try:
        feeder.start()
        _await_log(logs["a"], "fault point before_commit reached", more_than=0)
        frozen_at = time.monotonic()
        b = _start_scorer({**scorer_env, "FRAUD_SCORER_INSTANCE": "b"}, logs["b"])
        try:
            feeder.join(60)
            seen = [m.value() or b"" for m in consume_n(reader, len(txs), 90)]
            all_decided_s = time.monotonic() - frozen_at
        finally:
            os.kill(a.pid, signal.SIGCONT)
        # b's start (~3 s), a's session (6 s), the transaction timeout (20 s), the broker's
        # check (1 s); the feeder's last record comes ~8 s after the freeze. Measured with
        # librdkafka's 60 s timeout instead: over 60 s.
        assert len(seen) == len(txs), f"{len(seen)} of {len(txs)} decided with a frozen"
        assert all_decided_s < 45, f"decisions held back {all_decided_s:.0f} s by a zombie"
        a.send_signal(signal.SIGTERM)
        b.send_signal(signal.SIGTERM)
        # Woken, a is fenced (its transaction outlived the timeout) and stops with the
        # cause, or it rolled back and rejoined.
        if a.wait(30) != 0:
            assert "fenced" in logs["a"].read_text(), logs["a"].read_text()[-3000:]
        assert b.wait(30) == 0, logs["b"].read_text()[-3000:]
    finally:
        for zombie in (a, b):
            if zombie is not None and zombie.poll() is None:
                os.kill(zombie.pid, signal.SIGCONT)
                zombie.kill()
                zombie.wait(10)
    _assert_exactly_once([orjson.loads(v)["transaction_id"] for v in seen], txs)
    assert not [v for v in seen if orjson.loads(v)["path"] == "degraded"]
    assert_state_matches_a_clean_pass(scorer_env)


def _await_log(log: Path, text: str, *, more_than: int) -> None:
    """Wait until `text` appears in the shared scorer log more than `more_than` times."""
    await_condition(lambda: log.read_text().count(text) > more_than)
