"""Broker restart: how long until the scorer decides again, and is it still exactly once?

Starts a private embedded stack, trains a small model, and for each run deploys an
isolated scorer (`python -m fraudstream.scoring.service`, own topics and group), feeds it
an open loop of --rate tx/s, stops the broker (SIGTERM by pid), waits --down seconds,
starts it again on the same port and data directory, keeps feeding, then drains. Reports,
in seconds from the broker answering metadata again:

- steady: decisions flow again: the first new decision after which none is more than 2 s
  apart for 5 s (the headline: a lone batch committed before a rebalance does not count);
- first: the first new decision (new: stamped by the scorer's producer after the stop
  began, so a pre-outage commit read late does not count);
- reassigned: the scorer's next partition assignment (from its log);
and exactly once: every input the broker acknowledged has exactly one decision or dead
letter (missing and duplicates must be 0), read with read_committed.

The load generator and the reader reconnect within 100 ms, so they do not hide the
scorer's own delay. The scorer's clients get librdkafka settings through
FRAUD_KAFKA_CLIENT_OVERRIDES (`fraudstream.kafka_clients.env_overrides`): --baseline puts
back the scorer's settings from before this tuning (BASELINE below); --overrides adds a
JSON object of the same shape (what-if runs); --ab alternates baseline and tuned (the
code's defaults plus --overrides) runs on one stack, so a busy machine's drift hits both.

Findings (2 cores under load, broker down 15 s, 200 tx/s; see kafka_clients.REQUEST_TIMEOUT):
the time is the consumer rejoining. Gone longer than its session, librdkafka drops its
membership and rejoins as a new member, which the restarted coordinator holds until the
old member's session expires: steady after 12.2-14.8 s with runner.consumer_tuning's 10 s
session, 7.1-10.8 s with --overrides '{"consumer": {"session.timeout.ms": 6000,
"heartbeat.interval.ms": 1500}}' (6 s is the broker's default minimum), 3.8-4.0 s with 45 s
(no rebalance, but a crashed scorer's partitions would wait 45 s). A shared consumer
default cannot carry it: non-committing group readers re-read from the start after every
such outage. Static membership (group.instance.id) fenced itself after the outage
(FENCED_INSTANCE_ID, fatal). reconnect.backoff.max.ms did not matter: librdkafka >= 2.10
re-bootstraps while all brokers are down; every client was connected within 0.5 s.

    python load_tests/broker_restart.py [--runs 2] [--baseline | --ab] [--overrides JSON]
        [--rate 200] [--down 15] [--kafka-debug cgrp,eos]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, KafkaError, Message, TopicPartition

from bench_support import Load, Service
from fraudstream import kafka_clients
from fraudstream.contracts import encode
from fraudstream.localstack import kafka, processes
from fraudstream.localstack.stack import Endpoints, LocalStack, StackState
from fraudstream.scoring.settings import ScorerSettings
from fraudstream.settings import CommonSettings
from fraudstream.simulator import TRUTH_COLUMNS, SimulationConfig, iter_transactions, simulate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.integration.scorer_support
from tests.integration.scorer_support import (  # noqa: E402
    deployment_env,
    settings_from_env,
    train_small_model,
)

# The scorer's client settings before this tuning: runner.consumer_tuning's 10 s session,
# librdkafka's 3 s heartbeat and its 60 s request timeout (before REQUEST_TIMEOUT). Merged
# last, so they win over the code's defaults and its callers' settings alike.
BASELINE: dict[str, dict[str, Any]] = {
    "consumer": {"session.timeout.ms": 10_000, "heartbeat.interval.ms": 3_000},
    "producer": {"socket.timeout.ms": 60_000},
}
# The load generator and the reader are not under test: they reconnect at once.
FAST_RECONNECT = {"reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 100}
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


@dataclass
class Outputs:
    """What a read_committed reader saw on the decisions and dead-letter topics."""

    decisions: Counter[str] = field(default_factory=Counter)  # transaction_id -> count
    dead: Counter[tuple[int, int]] = field(default_factory=Counter)  # input (partition, offset)
    arrivals: list[tuple[float, float]] = field(default_factory=list)  # (monotonic, created)
    errors: list[str] = field(default_factory=list)


class Reader:
    """Reads decisions and dead letters from the beginning, in a thread."""

    def __init__(self, settings: ScorerSettings) -> None:
        self.consumer = kafka_clients.consumer(
            settings, settings.kafka_bootstrap_servers or "", f"restart-reader-{os.getpid()}",
            {"fetch.wait.max.ms": 50, "enable.partition.eof": False, **FAST_RECONNECT},
        )  # fmt: skip
        self.decisions, self.dlq = settings.topic_decisions, settings.topic_dlq
        self.consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING)
                              for t in (self.decisions, self.dlq)
                              for p in range(settings.topic_partitions)])  # fmt: skip
        self.seen = Outputs()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.consumer.poll(0.05)
            if message is not None:
                self._take(message, time.monotonic())

    def _take(self, message: Message, arrived: float) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._TRANSPORT:  # the outage itself
                self.seen.errors.append(str(error))
            return
        body = orjson.loads(message.value() or b"{}")
        if message.topic() == self.dlq:
            self.seen.dead[(body.get("partition", -1), body.get("offset", -1))] += 1
            return
        self.seen.decisions[body["transaction_id"]] += 1
        self.seen.arrivals.append((arrived, message.timestamp()[1] / 1000))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.consumer.close()


class Sender:
    """Open loop: input i is produced at start + i / rate; acknowledgements are recorded."""

    def __init__(self, settings: ScorerSettings, load: Load, rate: float) -> None:
        self.producer = kafka_clients.producer(
            settings, settings.kafka_bootstrap_servers or "", {"linger.ms": 5, **FAST_RECONNECT}
        )
        self.topic, self.load, self.rate = settings.topic_transactions, load, rate
        self.acked: dict[tuple[int, int], str] = {}  # (partition, offset) -> transaction_id
        self.failed: list[str] = []
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sender", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        start, load = time.monotonic(), self.load
        while not self._stop.is_set() and self.sent < len(load.ids):
            due = min(len(load.ids), int((time.monotonic() - start) * self.rate) + 1)
            for index in range(self.sent, due):
                self.producer.produce(self.topic, load.payloads[index], key=load.keys[index],
                                      on_delivery=self._acked(load.ids[index]))  # fmt: skip
            self.sent = max(self.sent, due)
            self.producer.poll(0.005)
        if self.sent >= len(load.ids):
            self.failed.append("ran out of simulated transactions: raise the load size")

    def _acked(self, tx_id: str) -> Any:
        def report(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                self.failed.append(f"{tx_id}: {error}")
            else:
                self.acked[(message.partition() or 0, message.offset() or 0)] = tx_id

        return report

    def stop(self) -> int:
        """Stop sending; returns how many inputs are still unacknowledged after 60 s."""
        self._stop.set()
        self._thread.join(10)
        return self.producer.flush(60)


@dataclass(frozen=True)
class Result:
    arm: str
    steady_s: float
    first_s: float
    reassigned_s: float
    inputs: int
    missing: int
    duplicates: int
    notes: str

    def line(self) -> str:
        return (f"{self.arm}: steady {self.steady_s:.1f} s, first {self.first_s:.1f} s, "
                f"reassigned {self.reassigned_s:.1f} s; {self.inputs} inputs, missing "
                f"{self.missing}, duplicates {self.duplicates}; {self.notes}")  # fmt: skip


def restart_broker(stack: LocalStack, state: StackState, down_s: float) -> tuple[float, float]:
    """Stop the broker by pid, wait `down_s`, start it on the same port and data; returns
    (wall clock when the stop began, monotonic time when it answered metadata again)."""
    stop_wall = time.time()
    if not processes.stop(state.kafka_pid, kafka.MAIN_CLASS, timeout_s=60):
        raise RuntimeError(f"the broker (pid {state.kafka_pid}) was not running")
    stopped = time.monotonic()
    print(f"    broker stop began at {_clock(stop_wall)}, took {time.time() - stop_wall:.1f} s; "
          f"down for {down_s:.0f} s")  # fmt: skip
    time.sleep(max(0.0, stopped + down_s - time.monotonic()))
    again = stack.up(say=lambda _line: None)  # restarts what is not running, same ports
    if again.kafka_port != state.kafka_port:
        raise RuntimeError(f"broker came back on port {again.kafka_port}, not {state.kafka_port}")
    back = time.monotonic()
    print(f"    broker back at {_clock(time.time())} (pid {again.kafka_pid}), "
          f"{back - stopped:.1f} s after it stopped")  # fmt: skip
    return stop_wall, back


def _clock(wall: float) -> str:
    return datetime.fromtimestamp(wall).strftime("%H:%M:%S.%f")[:-3]


def new_arrivals(reader: Reader, stop_wall: float, back: float) -> list[float]:
    """Sorted monotonic arrivals of decisions produced after the stop began, read after
    the broker was back."""
    return sorted(
        a for a, created in list(reader.seen.arrivals) if a > back and created > stop_wall
    )


def steady_from(arrivals: list[float], gap_s: float = 2.0, hold_s: float = 5.0) -> float:
    """The first arrival after which decisions keep coming (no gap over `gap_s`) for
    `hold_s`; NaN if there is none yet."""
    start = 0
    for i in range(1, len(arrivals)):
        if arrivals[i] - arrivals[i - 1] > gap_s:
            start = i
        elif arrivals[i] - arrivals[start] >= hold_s:
            return arrivals[start]
    return float("nan")


def await_steady(reader: Reader, stop_wall: float, back: float, timeout_s: float) -> None:
    deadline = back + timeout_s
    while time.monotonic() < deadline:
        if not math.isnan(steady_from(new_arrivals(reader, stop_wall, back))):
            return
        time.sleep(0.2)


def assignments_after(log: Path, wall: float) -> list[float]:
    """Wall-clock times of the scorer's `assigned` log lines after `wall`."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        match = _LOG_TIME.match(line)
        if match and " assigned [" in line:
            at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if at > wall:
                found.append(at)
    return found


def one_run(args: argparse.Namespace, run: int, arm: str, ctx: Context) -> Result:
    env = deployment_env(ctx.endpoints, ctx.registry, ctx.admin)
    overrides = client_overrides(args, baseline=arm == "baseline")
    if overrides:
        env[kafka_clients.OVERRIDES_ENV] = orjson.dumps(overrides).decode()
    settings = settings_from_env(env)
    scorer = Service(scorer_argv(args), env, ctx.workdir / f"scorer-{run}-{arm}.log")
    scorer.start()
    reader: Reader | None = None
    try:
        scorer.await_line("assigned [(", 180)
        reader, sender = Reader(settings), Sender(settings, ctx.load, args.rate)
        time.sleep(args.before)
        decided_before = sum(reader.seen.decisions.values())
        stop_wall, back = restart_broker(ctx.stack, ctx.state, args.down)
        back_wall = time.time() - (time.monotonic() - back)
        await_steady(reader, stop_wall, back, timeout_s=180)
        time.sleep(args.after)
        unacked = sender.stop()
        expected = sender.acked
        wanted = set(expected.values())
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not wanted <= _answered(reader.seen, expected):
            time.sleep(0.2)
    finally:
        code = scorer.stop()
        if reader is not None:
            reader.close()
    seen, arrivals = reader.seen, new_arrivals(reader, stop_wall, back)
    answered = Counter({tx: n for tx, n in seen.decisions.items() if tx in wanted})
    for place, n in seen.dead.items():
        if place in expected:
            answered[expected[place]] += n
    assigned = assignments_after(scorer.log, back_wall)
    notes = [f"back at {_clock(back_wall)}", f"{decided_before} decided before the stop",
             f"scorer exit {code}"]  # fmt: skip
    notes += [f"{unacked} inputs unacknowledged"] if unacked else []
    notes += [f"{len(sender.failed)} sends failed: {sender.failed[:2]}"] if sender.failed else []
    notes += [f"{sum(seen.dead.values())} dead letters"] if seen.dead else []
    notes += [f"reader errors {seen.errors[:2]}"] if seen.errors else []
    return Result(
        arm=arm,
        steady_s=steady_from(arrivals) - back,
        first_s=(arrivals[0] - back) if arrivals else float("nan"),
        reassigned_s=(assigned[0] - back_wall) if assigned else float("nan"),
        inputs=len(wanted),
        missing=len(wanted - set(answered)),
        duplicates=sum(n - 1 for n in answered.values() if n > 1),
        notes="; ".join(notes),
    )


def _answered(seen: Outputs, expected: dict[tuple[int, int], str]) -> set[str]:
    dead = {expected[p] for p in list(seen.dead) if p in expected}
    return set(seen.decisions) | dead


# With --kafka-debug the scorer's clients get no `logger`: librdkafka then writes to stderr
# as things happen, stamped with its own clock (a Python logger only sees a client's lines
# when that client is polled, which during an outage can be many seconds later).
_DEBUG_SCORER = """
import runpy, confluent_kafka
from fraudstream import kafka_clients
def unlogged(cls):
    return lambda config: cls({k: v for k, v in config.items() if k != "logger"})
kafka_clients.Producer = unlogged(confluent_kafka.Producer)
kafka_clients.Consumer = unlogged(confluent_kafka.Consumer)
runpy.run_module("fraudstream.scoring.service", run_name="__main__")
"""


def scorer_argv(args: argparse.Namespace) -> list[str]:
    """The scorer as deployed, or with librdkafka's debug lines on stderr (--kafka-debug)."""
    if args.kafka_debug:
        return [sys.executable, "-c", _DEBUG_SCORER]
    return [sys.executable, "-m", "fraudstream.scoring.service"]


@dataclass
class Context:
    stack: LocalStack
    state: StackState
    endpoints: Endpoints
    admin: Any
    registry: Path
    load: Load
    workdir: Path


def client_overrides(args: argparse.Namespace, *, baseline: bool) -> dict[str, dict[str, Any]]:
    """FRAUD_KAFKA_CLIENT_OVERRIDES for the scorer: BASELINE (baseline arm) or --overrides
    (tuned arm), then the `debug` property of --kafka-debug."""
    merged: dict[str, dict[str, Any]] = {}
    layers = [BASELINE if baseline else orjson.loads(args.overrides or "{}")]
    if args.kafka_debug:
        layers.append({"all": {"debug": args.kafka_debug}})
    for layer in layers:
        for section, values in layer.items():
            merged.setdefault(section, {}).update(values)
    return merged


def arms(args: argparse.Namespace) -> list[str]:
    """The arm of each run: alternating with --ab (--runs pairs), else all the same."""
    if args.ab:
        return ["baseline", "tuned"] * args.runs
    return ["baseline" if args.baseline else "tuned"] * args.runs


def simulate_load(count: int) -> Load:
    config = SimulationConfig(seed=5, n_transactions=count, days=max(2.0, count / 20_000))
    table = simulate(config).transactions.drop_columns(list(TRUTH_COLUMNS))
    txs = list(iter_transactions(table))
    return Load([encode(tx) for tx in txs], [tx.card_token.encode() for tx in txs],
                [tx.transaction_id for tx in txs])  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--runs", type=int, default=2, help="runs (pairs with --ab)")
    arm = parser.add_mutually_exclusive_group()
    arm.add_argument(
        "--baseline",
        action="store_true",
        help="the scorer's clients get librdkafka's defaults (BASELINE)",
    )
    arm.add_argument("--ab", action="store_true", help="alternate baseline and tuned runs")
    add("--overrides", default="", help="tuned arm: JSON like FRAUD_KAFKA_CLIENT_OVERRIDES")
    add("--rate", type=float, default=200.0, help="inputs per second")
    add("--down", type=float, default=15.0, help="seconds the broker is down")
    add("--before", type=float, default=15.0, help="traffic before the stop (s)")
    add("--after", type=float, default=10.0, help="traffic after recovery (s)")
    add("--kafka-debug", default="", help="librdkafka debug contexts to log")
    add("--cache-dir", type=Path, default=REPO / ".cache", help="Kafka jars")
    add("--workdir", type=Path, default=None, help="keep logs here")
    return parser.parse_args()  # fmt: skip


def main() -> None:
    args = parse_args()
    quiet = logging.getLogger("fraudstream.kafka")  # our clients' outage noise
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    os.environ.pop(kafka_clients.OVERRIDES_ENV, None)  # our own clients are not under test
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="broker-restart-"))
    workdir.mkdir(parents=True, exist_ok=True)
    plan = arms(args)
    print(f"broker restart, runs {plan}, logs in {workdir}")
    for arm in sorted(set(plan)):
        shown = orjson.dumps(client_overrides(args, baseline=arm == "baseline")).decode()
        print(f"  {arm}: FRAUD_KAFKA_CLIENT_OVERRIDES={shown}")
    stack = LocalStack(CommonSettings(state_dir=workdir / "stack", cache_dir=args.cache_dir))
    state = stack.up(say=lambda line: print(f"  {line}"))
    results: list[Result] = []
    try:
        endpoints = Endpoints(state.kafka_bootstrap, state.redis_url)
        admin = kafka_clients.admin_client(CommonSettings(), endpoints.kafka_bootstrap)
        train_small_model(workdir / "registry")
        seconds = args.before + args.down + 240 + args.after
        ctx = Context(stack, state, endpoints, admin, workdir / "registry",
                      simulate_load(int(args.rate * seconds)), workdir)  # fmt: skip
        for run, arm in enumerate(plan):
            print(f"  run {run + 1} ({arm}):")
            results.append(one_run(args, run, arm, ctx))
            ctx.state = stack.load() or ctx.state  # the broker's new pid
            print(f"    {results[-1].line()}")
    finally:
        stack.down(say=lambda line: print(f"  {line}"))
    for arm in sorted(set(plan)):
        mine = [r for r in results if r.arm == arm]
        steady = ", ".join(f"{r.steady_s:.1f}" for r in mine)
        first = ", ".join(f"{r.first_s:.1f}" for r in mine)
        print(f"{arm}: steady {steady} s; first {first} s")
    exact = all(r.missing == 0 and r.duplicates == 0 for r in results)
    print(f"exactly once in every run: {exact}")


if __name__ == "__main__":
    main()
