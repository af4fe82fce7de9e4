"""The scorer's crash scenario (tests/integration/crash.py), many times over with new seeds.

Starts a private embedded stack (Kafka + Redis on free ports under a temporary directory,
stopped at the end by the pids it recorded), trains a small model once, then runs
--runs scenarios, each in a fresh deployment (own topics, group and Redis prefix):
even runs kill the scorer at random moments (`crash.RANDOM_KILLS`), odd runs kill it at
a fault point (each of `crash.FAULT_POINTS` in turn, at a seeded batch number), and some
runs use at-least-once delivery instead of exactly once. A failed verdict fails that run
only. One line per run, then `passed X/N`; exit status 1 if any run failed. Runs are
not started past --max-minutes, and one still running then is aborted.

    python load_tests/crash_stress.py [--runs 20] [--max-minutes 60] [--seed 1000]
        [--workdir DIR]
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the shared scenario lives in tests/integration

from tests.integration import crash  # noqa: E402
from tests.integration.scorer_support import deployment_env, train_small_model  # noqa: E402

from fraudstream import kafka_clients  # noqa: E402
from fraudstream.localstack.stack import Endpoints, LocalStack  # noqa: E402
from fraudstream.settings import CommonSettings  # noqa: E402

EXACTLY_ONCE, AT_LEAST_ONCE = "exactly_once", "at_least_once"
# At least once, the scorer passes only this fault point (runner._deliver); the other
# points sit on the transactional path.
AT_LEAST_ONCE_POINTS = ("after_commit_before_save",)
FAULT_VARIANTS = [(p, EXACTLY_ONCE) for p in crash.FAULT_POINTS] + [
    (p, AT_LEAST_ONCE) for p in AT_LEAST_ONCE_POINTS
]
SCORER_MARKER = b"fraudstream.scoring.service"


class OutOfTime(BaseException):
    """--max-minutes passed while a run was still going (a BaseException, so that no
    `except Exception` on the way swallows it)."""


@dataclass(frozen=True)
class Scenario:
    """One run: which stops, which delivery, how much traffic, extra scorer settings."""

    seed: int
    name: str
    stops: tuple[crash.Stop, ...]
    delivery: str
    n: int
    extra: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        stops = ",".join(str(s) for s in self.stops)
        return f"{self.name} [{stops}] {self.delivery}"


def plan(index: int, base_seed: int) -> Scenario:
    """Even runs: random kills, at least once every other time. Odd runs: a fault point
    (each in turn, then the at-least-once one), hit at a seeded batch of each of two
    incarnations; many small batches as in the fault-point test."""
    seed = base_seed + index
    if index % 2 == 0:
        delivery = AT_LEAST_ONCE if (index // 2) % 2 == 1 else EXACTLY_ONCE
        return Scenario(seed, "random kills", crash.RANDOM_KILLS, delivery, n=3000)
    point, delivery = FAULT_VARIANTS[(index // 2) % len(FAULT_VARIANTS)]
    rng = random.Random(seed)
    stops = (crash.Stop(fault=f"{point}:{rng.randint(2, 6)}"),
             crash.Stop(fault=f"{point}:{rng.randint(2, 4)}"))  # fmt: skip
    return Scenario(seed, "fault point", stops, delivery, n=1500,
                    extra={"FRAUD_SCORER_BATCH_MAX": "100"})  # fmt: skip


@dataclass
class Clients:
    """Producer and reader factories for one run, as the integration fixtures build them."""

    settings: CommonSettings
    bootstrap: str
    producers: list[Producer] = field(default_factory=list)
    readers: list[Consumer] = field(default_factory=list)

    def producer(self) -> Producer:
        made = kafka_clients.producer(self.settings, self.bootstrap)
        self.producers.append(made)
        return made

    def reader(self, topic: str) -> Consumer:
        made = kafka_clients.consumer(
            self.settings, self.bootstrap, f"stress-{uuid.uuid4().hex[:10]}"
        )
        made.subscribe([topic])
        self.readers.append(made)
        return made

    def close(self) -> None:
        for reader in self.readers:
            reader.close()
        for producer in self.producers:
            producer.flush(5)


def follow_decisions(clients: Clients, topic: str, stop: threading.Event,
                     handle: Callable[[dict[str, Any]], None]) -> None:  # fmt: skip
    """Read `topic` (read_committed) until `stop`, handing each decision to `handle`; run
    it in a thread. Shared by chaos.py and soak.py."""
    reader = clients.reader(topic)
    while not stop.is_set():
        for message in reader.consume(2000, timeout=0.2):
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    logging.warning("reader: %s", error)
                continue
            handle(orjson.loads(message.value() or b"{}"))


def stop_scorers() -> list[int]:
    """SIGKILL scorer processes this script started that a failed run left behind (its
    children whose command line is the scorer's), by pid; returns their pids."""
    stopped = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and SCORER_MARKER in cmdline:
            pid = int(entry.name)
            os.kill(pid, signal.SIGKILL)
            with suppress(ChildProcessError):  # reaped by its Popen meanwhile
                os.waitpid(pid, 0)
            stopped.append(pid)
    return stopped


def first_line(exc: BaseException) -> str:
    """Where the error was raised and the first line of its message."""
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    where = f"{type(exc).__name__} at {Path(frame.filename).name}:{frame.lineno}"
    text = str(exc).strip()
    return f"{where}: {text.splitlines()[0]}"[:300] if text else where


def run_one(
    scenario: Scenario,
    endpoints: Endpoints,
    registry_dir: Path,
    admin: AdminClient,
    workdir: Path,
) -> str | None:
    """Run a scenario in a fresh deployment; None when it passed, else why it failed."""
    env = deployment_env(endpoints, registry_dir, admin,
                         FRAUD_SCORER_DELIVERY=scenario.delivery, **scenario.extra)  # fmt: skip
    clients = Clients(CommonSettings(), endpoints.kafka_bootstrap)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        crash.run(env, clients.producer, clients.reader, workdir, seed=scenario.seed,
                  stops=scenario.stops, n=scenario.n)  # fmt: skip
    except AssertionError as exc:
        return first_line(exc)
    except Exception as exc:  # any error fails this run, not the others
        return f"error: {first_line(exc)}"
    finally:
        left = stop_scorers()
        if left:
            print(f"    stopped leftover scorer pids {left}", flush=True)
        clients.close()
    return None


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise OutOfTime in the main thread after `seconds` (the alarm is off afterwards)."""

    def ring(_signum: int, _frame: FrameType | None) -> None:
        raise OutOfTime(f"--max-minutes reached after {seconds:.0f} s of this run")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def private_stack(workdir: Path) -> Iterator[Endpoints]:
    say: Callable[[str], None] = lambda line: print(f"  {line}", flush=True)  # noqa: E731
    stack = LocalStack(CommonSettings(state_dir=workdir / "stack", cache_dir=REPO / ".cache"))
    try:
        state = stack.up(say=say)
        yield Endpoints(state.kafka_bootstrap, state.redis_url)
    finally:
        stack.down(say=say)


def stress(args: argparse.Namespace, workdir: Path) -> int:
    budget_s, started = args.max_minutes * 60, time.monotonic()
    with private_stack(workdir) as endpoints:
        admin = kafka_clients.admin_client(CommonSettings(), endpoints.kafka_bootstrap)
        train_small_model(workdir / "registry")
        print(f"stack and model ready in {time.monotonic() - started:.0f} s", flush=True)
        passed, failed, longest = 0, 0, 0.0
        for index in range(args.runs):
            left = budget_s - (time.monotonic() - started)
            if left < longest:
                print(f"out of time: {args.runs - index} of {args.runs} runs not started "
                      f"(--max-minutes {args.max_minutes:g})")  # fmt: skip
                break
            scenario = plan(index, args.seed)
            begun = time.monotonic()
            try:
                with deadline(left):
                    error = run_one(scenario, endpoints, workdir / "registry", admin,
                                    workdir / f"run-{index:02d}")  # fmt: skip
            except OutOfTime as exc:
                stop_scorers()
                error = str(exc)
            took = time.monotonic() - begun
            longest = max(longest, took)
            if error is None:
                passed, verdict = passed + 1, "pass"
            else:
                failed, verdict = failed + 1, f"FAIL {error}"
                if args.workdir is not None:
                    verdict += f" (log {workdir}/run-{index:02d}/scorer-{scenario.seed}.log)"
            print(f"run {index + 1:>2}/{args.runs} seed {scenario.seed} "
                  f"{scenario.describe()}: {verdict} ({took:.0f} s)", flush=True)  # fmt: skip
    total = passed + failed
    skipped = f" ({args.runs - total} not run)" if total < args.runs else ""
    print(f"passed {passed}/{total}{skipped} in {time.monotonic() - started:.0f} s")
    return 1 if failed else 0


def _terminated(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the stack's `down`


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--max-minutes", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1000, help="seed of the first run")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the stack, model and scorer logs here")  # fmt: skip
    args = parser.parse_args()
    os.environ.setdefault("FRAUD_GIT_COMMIT", "stress")
    logging.basicConfig(level=logging.WARNING, format="    [%(name)s] %(message)s")
    signal.signal(signal.SIGTERM, _terminated)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        sys.exit(stress(args, args.workdir))
    with tempfile.TemporaryDirectory(prefix="crash-stress-") as tmp:
        code = stress(args, Path(tmp))
    sys.exit(code)


if __name__ == "__main__":
    main()
