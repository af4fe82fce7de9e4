"""Faults under load: the broker restarted, Redis killed and paused, the scorer killed -9,
each while transactions flow at --rate; measured loss, duplicates and recovery time.

A private embedded stack (Kafka + Redis on free ports under a temporary directory, stopped
by the pids it recorded) and a small model trained once; each scenario gets a fresh
deployment (own topics, group, Redis prefix) and one scorer process. Traffic runs for
--seconds; the fault starts --fault-at seconds in and lasts --down seconds. Afterwards
every input must be decided (loss 0), exactly once (duplicates 0), and Redis state must
equal one clean pass over the log. Recovery, from the fault's end: until the first
decision arrives ("resumed"), and until one arrives that is fresh again ("fresh": read
within 1 s of its transaction's produce, not degraded). One table row per scenario;
exit status 1 if any failed.

    python load_tests/chaos.py [--rate 300] [--seconds 60] [--fault-at 15] [--down 10]
        [--only broker-restart,redis-kill,redis-pause,scorer-kill]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the shared harness lives in tests/integration
sys.path.insert(0, str(REPO / "load_tests"))

from tests.integration import crash  # noqa: E402
from tests.integration.scorer_support import (  # noqa: E402
    assert_state_matches_a_clean_pass,
    deployment_env,
    settings_from_env,
    train_small_model,
)

from crash_stress import Clients, follow_decisions, private_stack, stop_scorers  # noqa: E402
from fraudstream import kafka_clients  # noqa: E402
from fraudstream.contracts import encode  # noqa: E402
from fraudstream.localstack import kafka, processes, redis_server  # noqa: E402
from fraudstream.localstack.stack import Endpoints, LocalStack, kafka_ready  # noqa: E402
from fraudstream.settings import CommonSettings  # noqa: E402

FRESH_S = 1.0  # a decision within this long of its transaction's produce is "fresh"
SCENARIOS = ("broker-restart", "redis-kill", "redis-pause", "scorer-kill")


@dataclass
class Feed:
    """Transactions produced at a steady rate, with the time each was produced."""

    produced_at: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Reading:
    """Decisions read (read_committed) as they arrive: (received at, transaction id, path)."""

    rows: list[tuple[float, str, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


@dataclass
class Result:
    scenario: str
    sent: int
    decided: int
    lost: int
    duplicates: int
    degraded: int
    resumed_s: float | None  # fault end -> the first decision read after it
    fresh_s: float | None  # fault end -> the first fresh, not degraded decision
    left_s: float  # traffic after the fault's end (what fresh_s could at most be)
    state_ok: bool
    error: str = ""

    @property
    def passed(self) -> bool:
        return not self.error and self.lost == 0 and self.duplicates == 0 and self.state_ok


def _produce(clients: Clients, topic: str, n: int, rate: float, feed: Feed) -> None:
    producer = clients.producer()
    start = time.monotonic()
    for i, tx in enumerate(crash.transactions(n, seed=77)):
        producer.produce(topic, encode(tx), key=tx.card_token.encode())
        with feed.lock:
            feed.produced_at[tx.transaction_id] = time.monotonic()
        producer.poll(0)
        ahead = start + i / rate - time.monotonic()
        if ahead > 0.005:
            time.sleep(ahead)  # paces the feed
    # The broker may be away for a while: keep delivering until it takes everything.
    deadline = time.monotonic() + 120
    while producer.flush(5) and time.monotonic() < deadline:
        pass


def _read(clients: Clients, topic: str, reading: Reading) -> None:
    follow_decisions(
        clients,
        topic,
        reading.stop,
        lambda d: reading.rows.append((time.monotonic(), d["transaction_id"], d["path"])),
    )


class Fault:
    """Start and end one fault on the running stack or scorer."""

    def __init__(self, name: str, stack: LocalStack, endpoints: Endpoints,
                 scorer: Callable[[], int], restart: Callable[[], None]) -> None:  # fmt: skip
        self.name, self.stack, self.endpoints = name, stack, endpoints
        self.scorer, self.restart = scorer, restart

    def begin(self) -> None:
        state = self.stack.load()
        assert state is not None
        if self.name == "broker-restart":
            assert processes.stop(state.kafka_pid, kafka.MAIN_CLASS, timeout_s=60)
        elif self.name == "redis-kill":
            os.kill(state.redis_pid, signal.SIGKILL)
        elif self.name == "redis-pause":
            os.kill(state.redis_pid, signal.SIGSTOP)
        elif self.name == "scorer-kill":
            os.kill(self.scorer(), signal.SIGKILL)

    def end(self) -> None:
        state = self.stack.load()
        assert state is not None
        if self.name == "redis-pause":
            os.kill(state.redis_pid, signal.SIGCONT)
        elif self.name == "scorer-kill":
            self.restart()
        else:  # `up` starts whatever is not running, on the same ports and data
            processes.wait_until(lambda: not processes.is_alive(state.redis_pid), 10)
            self.stack.up(say=lambda _line: None)
            assert kafka_ready(self.endpoints.kafka_bootstrap, timeout_s=30)
            assert redis_server.ping(state.redis_port)


def run(name: str, args: argparse.Namespace, stack: LocalStack, *, endpoints: Endpoints,
        registry: Path, workdir: Path) -> Result:  # fmt: skip
    settings = CommonSettings()
    admin = kafka_clients.admin_client(settings, endpoints.kafka_bootstrap)
    env = deployment_env(endpoints, registry, admin)
    topics = settings_from_env(env)
    clients = Clients(settings, endpoints.kafka_bootstrap)
    log = workdir / f"{name}.log"
    procs = [crash.start_scorer(env, log, None)]

    def restart() -> None:
        procs[-1].wait(30)
        procs.append(crash.start_scorer(env, log, None))

    n = int(args.rate * args.seconds)
    feed, reading = Feed(), Reading()
    reader = threading.Thread(target=_read, args=(clients, topics.topic_decisions, reading),
                              daemon=True)  # fmt: skip
    feeder = threading.Thread(
        target=_produce,
        args=(clients, topics.topic_transactions, n, args.rate, feed),
        daemon=True,
    )
    fault = Fault(name, stack, endpoints, lambda: procs[-1].pid, restart)
    error, ended_at, state_ok = "", None, False
    try:
        assert processes.wait_until(lambda: "assigned" in log.read_text(errors="replace"), 90)
        reader.start()
        feeder.start()
        time.sleep(args.fault_at)  # traffic before the fault (the schedule, not a sync)
        fault.begin()
        time.sleep(args.down)  # the outage itself
        fault.end()
        ended_at = time.monotonic()
        feeder.join(args.seconds + 180)
        ids = set(feed.produced_at)
        processes.wait_until(lambda: ids <= {r[1] for r in reading.rows}, 180, interval=0.5)
        time.sleep(3)  # anything still in flight would show as a duplicate
    except AssertionError as exc:
        error = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        reading.stop.set()
        reader.join(10)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
        stop_scorers()
        clients.close()
    if not error:
        try:
            assert_state_matches_a_clean_pass(env)
            state_ok = True
        except AssertionError as exc:
            error = f"state: {exc}"[:200]
    return _result(name, feed, reading, ended_at, state_ok=state_ok, error=error)


def _result(name: str, feed: Feed, reading: Reading, ended_at: float | None, *,
            state_ok: bool, error: str) -> Result:  # fmt: skip
    counts = Counter(r[1] for r in reading.rows)
    resumed = fresh = None
    left = 0.0
    if ended_at is not None:
        after = [(at - ended_at, tx, path) for at, tx, path in reading.rows if at >= ended_at]
        resumed = min((s for s, _, _ in after), default=None)
        fresh = min((s for s, tx, path in after if path != "degraded"
                     and s + ended_at - feed.produced_at.get(tx, 0.0) <= FRESH_S),
                    default=None)  # fmt: skip
        left = max(feed.produced_at.values(), default=ended_at) - ended_at
    return Result(
        scenario=name, sent=len(feed.produced_at), decided=len(counts),
        lost=len(set(feed.produced_at) - set(counts)),
        duplicates=sum(c - 1 for c in counts.values() if c > 1),
        degraded=sum(1 for r in reading.rows if r[2] == "degraded"),
        resumed_s=resumed, fresh_s=fresh,
        left_s=left, state_ok=state_ok, error=error,
    )  # fmt: skip


def table(results: list[Result], args: argparse.Namespace) -> str:
    lines = [
        f"{args.rate:g} tx/s for {args.seconds:g} s; fault at {args.fault_at:g} s for "
        f"{args.down:g} s",
        "| fault | sent | decided | lost | duplicates | degraded | resumed after | fresh after "
        "| state | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        resumed = "-" if r.resumed_s is None else f"{r.resumed_s:.1f} s"
        fresh = f"> {r.left_s:.0f} s" if r.fresh_s is None else f"{r.fresh_s:.1f} s"
        verdict = "pass" if r.passed else f"FAIL {r.error}"
        lines.append(f"| {r.scenario} | {r.sent:,} | {r.decided:,} | {r.lost} | {r.duplicates} | "
                     f"{r.degraded:,} | {resumed} | {fresh} | "
                     f"{'ok' if r.state_ok else 'differs'} | {verdict} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--seconds", type=float, default=60.0, help="traffic per scenario")
    parser.add_argument("--fault-at", type=float, default=15.0)
    parser.add_argument("--down", type=float, default=10.0, help="how long the fault lasts")
    parser.add_argument("--only", default=",".join(SCENARIOS))
    args = parser.parse_args()
    chosen = [s for s in args.only.split(",") if s]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {SCENARIOS}")
    if args.fault_at + args.down >= args.seconds:
        parser.error("--fault-at + --down must end before --seconds of traffic")
    os.environ.setdefault("FRAUD_GIT_COMMIT", "chaos")
    logging.basicConfig(level=logging.WARNING, format="    [%(name)s] %(message)s")
    results = []
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        workdir = Path(tmp)
        with private_stack(workdir) as endpoints:
            stack = LocalStack(CommonSettings(state_dir=workdir / "stack",
                                              cache_dir=REPO / ".cache"))  # fmt: skip
            train_small_model(workdir / "registry")
            for name in chosen:
                started = time.monotonic()
                results.append(
                    run(
                        name,
                        args,
                        stack,
                        endpoints=endpoints,
                        registry=workdir / "registry",
                        workdir=workdir,
                    )
                )
                print(f"{name}: {'pass' if results[-1].passed else 'FAIL'} "
                      f"({time.monotonic() - started:.0f} s)", flush=True)  # fmt: skip
    print(table(results, args))
    sys.exit(0 if all(r.passed for r in results) else 1)


if __name__ == "__main__":
    main()
