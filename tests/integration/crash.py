"""One crash scenario against a real broker and Redis, shared by the integration tests and
`load_tests/crash_stress.py`: traffic flows while the scorer (a real process) is killed
with signals or at deterministic fault points and restarted; a read_committed consumer
reads the decisions during the faults and after. The verdict: every input decided
exactly once (at least once: every input decided, repeats the same decision), no
degraded decision, and every entity's Redis state equal to one clean pass over the log.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from confluent_kafka import Consumer, KafkaError, Producer

from fraudstream.contracts import Transaction, encode
from fraudstream.simulator import SimulationConfig
from fraudstream.trainer import simulated_history
from tests.integration.scorer_support import (
    assert_state_matches_a_clean_pass,
    redis_caught_up,
    settings_from_env,
)
from tests.waiting import await_condition


@dataclass(frozen=True)
class Stop:
    """How one incarnation of the scorer ends: a signal after some decisions, or by itself
    at the n-th pass through a fault point (`scoring.faults`)."""

    signal: int = signal.SIGKILL
    fault: str | None = None  # e.g. "after_commit_before_save:4"

    def __str__(self) -> str:
        return self.fault or signal.Signals(self.signal).name


RANDOM_KILLS = (Stop(signal.SIGKILL), Stop(signal.SIGTERM), Stop(signal.SIGKILL))
FAULT_POINTS = ("before_commit", "mid_produce", "after_commit_before_save", "after_save")


@dataclass
class Outcome:
    decisions: list[bytes] = field(default_factory=list)
    log: str = ""


def transactions(n: int, seed: int) -> list[Transaction]:
    history = simulated_history(SimulationConfig(seed=seed, n_transactions=n, days=2))
    return history.transactions


def produce(producer: Producer, topic: str, txs: list[Transaction], rate: float) -> None:
    start = time.monotonic()
    for i, tx in enumerate(txs):
        producer.produce(topic, encode(tx), key=tx.card_token.encode())
        producer.poll(0)
        ahead = start + i / rate - time.monotonic()
        if ahead > 0.005:
            time.sleep(ahead)  # paces the feed (not a synchronisation)
    assert producer.flush(30) == 0


def start_scorer(env: dict[str, str], log: Path, fault: str | None) -> subprocess.Popen[bytes]:
    extra = {"FRAUD_FAULT_POINT": fault} if fault else {}
    with log.open("ab") as sink:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "fraudstream.scoring.service"],
            env={**os.environ, **env, **extra}, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip


def poll(reader: Consumer, n: int, timeout_s: float) -> list[bytes]:
    deadline, got = time.monotonic() + timeout_s, list[bytes]()
    while len(got) < n and time.monotonic() < deadline:
        message = reader.poll(0.2)
        if message is None:
            continue
        error = message.error()
        if error is not None:
            assert error.code() == KafkaError._PARTITION_EOF, f"consumer error: {error}"
            continue
        got.append(message.value() or b"")
    return got


def _count_in(log: Path, text: str) -> int:
    return log.read_text(errors="replace").count(text) if log.exists() else 0


def run(
    env: dict[str, str],
    make_producer: Callable[[], Producer],
    make_reader: Callable[[str], Consumer],
    workdir: Path,
    *,
    seed: int,
    stops: tuple[Stop, ...] = RANDOM_KILLS,
    n: int = 3000,
    rate: float = 600.0,
) -> Outcome:
    """Run the scenario and assert its verdict; returns what was read, for more checks."""
    settings = settings_from_env(env)
    exactly_once = settings.scorer_delivery == "exactly_once"
    txs = transactions(n, seed=40 + seed)
    rng = random.Random(seed)
    feeder = threading.Thread(
        target=produce, args=(make_producer(), settings.topic_transactions, txs, rate),
        daemon=True,
    )  # fmt: skip
    log = workdir / f"scorer-{seed}.log"
    reader = make_reader(settings.topic_decisions)  # reads during the faults too
    seen: list[bytes] = []
    final = None
    if not stops:  # a steady run: the scorer is up before the traffic starts
        final = start_scorer(env, log, None)
        deadline = time.monotonic() + 60
        while _count_in(log, "assigned") == 0:
            assert time.monotonic() < deadline, _tail(log)
            seen += poll(reader, 1, 0.1)
    feeder.start()
    for stop in stops:
        started = _count_in(log, "assigned")
        proc = start_scorer(env, log, stop.fault)
        if stop.fault is not None:
            deadline = time.monotonic() + 90
            while proc.poll() is None:
                assert time.monotonic() < deadline, f"{stop} never reached:\n{_tail(log)}"
                seen += poll(reader, 1000, 0.5)
            assert proc.returncode == -signal.SIGKILL, _tail(log)
            continue
        target = len(seen) + rng.randint(150, 700)
        seen += poll(reader, target - len(seen), 60)
        if stop.signal == signal.SIGTERM:  # once it runs (a stop during imports is a kill)
            deadline = time.monotonic() + 60
            while _count_in(log, "assigned") <= started:
                assert time.monotonic() < deadline, _tail(log)
                seen += poll(reader, 1000, 0.2)
        os.kill(proc.pid, stop.signal)  # SIGTERM lands mid-traffic: the batch must finish
        code = proc.wait(30)
        if stop.signal == signal.SIGTERM:
            assert code == 0, _tail(log)
    feeder.join(120)
    proc = final or start_scorer(env, log, None)
    try:
        all_ids = {tx.transaction_id for tx in txs}
        undecided = all_ids - {orjson.loads(v)["transaction_id"] for v in seen}
        deadline = time.monotonic() + 120
        while undecided:  # at least once: repeats must not count as progress
            assert time.monotonic() < deadline, f"{len(undecided)} inputs not decided in time"
            more = poll(reader, len(undecided), 5)
            undecided -= {orjson.loads(v)["transaction_id"] for v in more}
            seen += more
        seen += poll(reader, 1, 3)  # and nothing more arrives (checked below)
        # The last incarnation may have committed everything and died before its save: the
        # final one then has nothing to score and brings Redis up on its idle ticks once
        # assigned. Stopping it before that would test the harness, not the scorer.
        await_condition(lambda: redis_caught_up(env), 60,
                        "the final scorer to bring Redis to the end of the log", 0.5)  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, _tail(log)
    verdict(seen, all_ids, exactly_once=exactly_once,
            single_partition=settings.topic_partitions == 1)  # fmt: skip
    assert_state_matches_a_clean_pass(env)
    return Outcome(seen, _tail(log))


def verdict(
    seen: list[bytes], all_ids: set[str], *, exactly_once: bool, single_partition: bool = False
) -> None:
    decisions = [orjson.loads(v) for v in seen]
    ids = Counter(d["transaction_id"] for d in decisions)
    missing = all_ids - set(ids)
    assert not missing, f"{len(missing)} inputs without a decision"
    assert set(ids) == all_ids, "decisions for transactions never sent"
    degraded = [d["transaction_id"] for d in decisions if d["path"] == "degraded"]
    assert not degraded, f"{len(degraded)} degraded decisions nobody caused: {degraded[:3]}"
    if exactly_once:
        doubled = {i: c for i, c in ids.items() if c > 1}
        assert not doubled, f"duplicates: {list(doubled.items())[:5]}"
        return
    # At least once a replay may decide again. Its card features are the same (one
    # partition's log), but merchant, device and IP features read other partitions' parts
    # as they are at that moment, so the score may move: a repeat is a decision for the
    # same payment by the same model, and consumers keep the first by transaction_id.
    # With one input partition every entity has one part: then a repeat is the same
    # decision in everything but its timing fields.
    fields = (
        ("card_token", "event_time", "model_version") if not single_partition
        else tuple(k for k in decisions[0] if k not in {"decided_at", "latency_ms"})
    )  # fmt: skip
    first: dict[str, tuple[object, ...]] = {}
    for decision in decisions:
        same = tuple(decision[k] for k in fields)
        assert first.setdefault(decision["transaction_id"], same) == same, (
            "a repeated decision differs from the first in " + ", ".join(fields)
        )


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:] if log.exists() else ""
