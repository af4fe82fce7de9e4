"""`fraudctl demo` (what `make run` runs): the whole flow on one machine, with a live summary.

Brings the embedded stack up (unless Kafka/Redis are configured), provisions topics,
trains a first model from the simulator when the registry has no champion, starts the
scorer, the archiver, the drift monitor, the trainer and the review service (printing the
console's URL and, on the first run, an admin login with a generated password), streams
simulated payments and prints, every second, the rate, decisions by action and path,
end-to-end latency percentiles, the dead-letter count, the detectors the monitor sees
drifted and the review queue's depth. With
`--drift` the replay is the drift scenario of `demo_drift`, which shows the retraining loop.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
from confluent_kafka import Consumer, Message

from fraudstream import kafka_clients
from fraudstream.contracts import Label, Transaction, encode
from fraudstream.demo_drift import HISTORY_PER_DAY, DriftDemo, drift_line
from fraudstream.errors import LocalStackError
from fraudstream.localstack.processes import free_port
from fraudstream.localstack.stack import Endpoints
from fraudstream.registry import Registry, RegistryError
from fraudstream.scoring.settings import ScorerSettings
from fraudstream.simulator import TRUTH_COLUMNS, SimulationConfig, iter_transactions, simulate
from fraudstream.simulator.stream import StreamStats, stream

Say = Callable[[str], None]


def ensure_model(settings: ScorerSettings, say: Say) -> None:
    """Train and promote a first model from simulated history when there is no champion."""
    try:
        if Registry(settings.registry_dir).champion(settings.model_name) is not None:
            return
    except RegistryError:
        pass  # no such model yet

    from fraudstream.features.spec import FeatureConfig  # noqa: PLC0415 - train-time imports
    from fraudstream.model.train_config import TrainConfig  # noqa: PLC0415
    from fraudstream.trainer import simulated_history, train_and_register  # noqa: PLC0415

    say("no model yet: training one on 100,000 simulated payments (about half a minute)")
    features_file = Path("config/features.yaml")
    features = FeatureConfig.from_yaml(features_file) if features_file.exists() else FeatureConfig()
    history = simulated_history(SimulationConfig(seed=7, n_transactions=100_000, days=20))
    outcome = train_and_register(
        history, features=features, config=TrainConfig(seed=7),
        registry=Registry(settings.registry_dir), name=settings.model_name,
    )  # fmt: skip
    say(f"champion {outcome.version.version}: model card {outcome.version.path / 'MODEL_CARD.md'}")


Child = subprocess.Popen[bytes]


def start_scorer(endpoints: Endpoints, metrics_port: int, log: Path) -> subprocess.Popen[bytes]:
    """The scorer as a child process on the stack's endpoints."""
    return _start("fraudstream.scoring.service", endpoints, metrics_port, log)


def start_archiver(endpoints: Endpoints, log: Path, **extra: str) -> subprocess.Popen[bytes]:
    """The archiver as a child process; it writes `archive/` (FRAUD_ARCHIVE_URL) every 10 s."""
    flush = {"FRAUD_ARCHIVE_FLUSH_S": os.environ.get("FRAUD_ARCHIVE_FLUSH_S", "10")}
    return _start("fraudstream.history.archiver", endpoints, free_port(), log,
                  **{**flush, **extra})  # fmt: skip


def start_monitor(endpoints: Endpoints, state_dir: Path, port: int, **extra: str) -> Child:
    """The drift monitor as a child process, its metrics on `port`."""
    return _start("fraudstream.drift.service", endpoints, free_port(), state_dir / "monitor.log",
                  **{"FRAUD_DRIFT_METRICS_PORT": str(port), **extra})  # fmt: skip


def start_trainer(endpoints: Endpoints, state_dir: Path, **extra: str) -> Child:
    """The trainer as a child process."""
    return _start("fraudstream.retrain.service", endpoints, free_port(), state_dir / "trainer.log",
                  **{"FRAUD_TRAINER_METRICS_PORT": str(free_port()), **extra})  # fmt: skip


def start_loop(endpoints: Endpoints, state_dir: Path, say: Say) -> tuple[list[Child], int]:
    """The drift monitor and the trainer as child processes (README "Retraining and
    promotion"); the monitor's metrics port, which the summary line reads."""
    port = free_port()
    monitor = start_monitor(endpoints, state_dir, port)
    trainer = start_trainer(endpoints, state_dir)
    say(f"drift monitor pid {monitor.pid}, trainer pid {trainer.pid}; logs "
        f"{state_dir / 'monitor.log'}, {state_dir / 'trainer.log'}; `fraudctl drift status "
        f"--url http://127.0.0.1:{port}/metrics`, `fraudctl models history fraud`")  # fmt: skip
    return [monitor, trainer], port


def start_review(settings: ScorerSettings, endpoints: Endpoints, say: Say) -> tuple[Child, Status]:
    """The review service as a child process (console on 127.0.0.1:8480, or a free port
    when that is taken); on the first run, creates the `admin` user and prints its
    generated password once. Returns the child and the summary's `review:` part."""
    from fraudstream.localstack.processes import port_open  # noqa: PLC0415 - the review
    from fraudstream.review import auth  # noqa: PLC0415 - extra, loaded when the demo runs
    from fraudstream.review.cli import open_store  # noqa: PLC0415
    from fraudstream.review.schema import User  # noqa: PLC0415
    from fraudstream.review.settings import ReviewSettings  # noqa: PLC0415
    from fraudstream.review.store import audit  # noqa: PLC0415

    review = ReviewSettings(state_dir=settings.state_dir)
    store = open_store(review)
    now = datetime.now(UTC)
    password = None
    with store.sessions.begin() as db:
        if db.get(User, "admin") is None:
            password = auth.generate_password()
            auth.create_user(db, "admin", auth.Role.ADMIN, password, now)
            audit(db, "fraudctl demo", "user_add", None, now, {"user": "admin", "role": "admin"})
    port = free_port() if port_open(review.review_port) else review.review_port
    log = settings.state_dir / "review.log"
    child = _start("fraudstream.review.service", endpoints, free_port(), log,
                   FRAUD_REVIEW_PORT=str(port), FRAUD_REVIEW_HOST="127.0.0.1")  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    say(f"review console {url} (API {url}api/docs); review service pid {child.pid}; log {log}")
    if password is not None:
        say(f"first console login: admin / {password} (shown this once; "
            "`fraudctl review user reset admin` makes a new one)")  # fmt: skip
    else:
        say("console login: admin, with the password shown on the first run "
            "(`fraudctl review user reset admin` makes a new one)")  # fmt: skip

    def line() -> str:
        backlog = store.summary(datetime.now(UTC))
        overdue = sum(q.overdue for q in backlog.queues.values())
        return f"review: {backlog.depth} open, {overdue} overdue"

    return child, _Refreshed(line, "review: starting")


def _start(
    module: str, endpoints: Endpoints, metrics_port: int, log: Path, **extra: str
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka_bootstrap,
        "REDIS_URL": endpoints.redis_url,
        "FRAUD_METRICS_PORT": str(metrics_port),
        **extra,
    }
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", module],
            env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


class Summary:
    """Counts and latencies from the decision and dead-letter topics."""

    def __init__(self) -> None:
        self.decisions: Counter[tuple[str, str]] = Counter()
        self.models: Counter[str] = Counter()  # decisions by the model version that made them
        self.last_decision = time.monotonic()
        self.dlq = 0
        self.backlog = 0
        self.latencies_ms: list[float] = []

    def add_decision(self, value: bytes, arrived: float, sent_at: dict[str, float]) -> None:
        data = orjson.loads(value)
        sent = sent_at.pop(str(data["transaction_id"]), None)
        if sent is None:
            self.backlog += 1  # input left from before this demo run
            return
        self.decisions[(data["action"], data["path"])] += 1
        self.models[data.get("model_version") or "rules"] += 1
        self.last_decision = time.monotonic()
        self.latencies_ms.append((arrived - sent) * 1000)

    def line(self, elapsed: float, stats: StreamStats) -> str:
        total = sum(self.decisions.values())
        actions = Counter[str]()
        paths = Counter[str]()
        for (action, path), count in self.decisions.items():
            actions[action] += count
            paths[path] += count
        recent = np.array(self.latencies_ms[-5000:] or [np.nan])
        p50, p99 = np.nanpercentile(recent, [50, 99]) if total else (np.nan, np.nan)
        by_action = " ".join(f"{a} {actions[a]}" for a in ("approve", "review", "decline"))
        by_path = " ".join(f"{p} {c}" for p, c in sorted(paths.items()))
        return (
            f"t={elapsed:4.0f}s sent {stats.sent} ({stats.sent / max(elapsed, 1e-9):,.0f}/s) "
            f"decided {total}: {by_action} | {by_path} | e2e p50 {p50:.0f} ms p99 {p99:.0f} ms "
            f"| labels {stats.labels} | dlq {self.dlq}"
            + (f" | older backlog {self.backlog}" if self.backlog else "")
        )


MAX_REPLAY = 360 * HISTORY_PER_DAY  # the simulator covers at most 366 days
MIN_REPLAY = 100  # and simulates at least 100 payments


def replay_size(rate: float, duration: float) -> tuple[int, float]:
    """Payments to simulate for the demo and the days they span (0 duration: the most)."""
    count = min(max(int(rate * duration), MIN_REPLAY), MAX_REPLAY) if duration else MAX_REPLAY
    return count, max(count / HISTORY_PER_DAY, 1.0)


AHEAD_MAX = timedelta(hours=23)  # the scorer refuses event times over a day ahead


def replay_window(
    now: datetime, days: float, replayed_until: datetime | None
) -> tuple[datetime, float]:
    """(start, days) of the demo's simulated history. It ends now, so no event time is more
    than a day ahead of the broker's clock (the scorer dead-letters those), but it never
    starts before the last event an earlier demo sent: cards' state in Redis is at that
    time, and replaying the same customers earlier again (make run twice) made 18 % of a
    40 s run's payments declines, against 0.3 % on a fresh stack. After an earlier demo
    the window may end up to 23 h ahead, and is shortened to fit (`replay_events` then
    simulates fewer payments, at the same density); with less than an hour of room left it
    ends now again."""
    start = now - timedelta(days=days)
    if replayed_until is None or replayed_until <= start:
        return start, days
    room = (now + AHEAD_MAX - replayed_until) / timedelta(days=1)
    if room < 1 / 24:  # an earlier demo ran ahead of the clock: `make clean` resets
        return start, days
    return replayed_until, min(days, room)


def replay_events(
    rate: float, duration: float, say: Say, replayed_until: datetime | None = None
) -> tuple[Iterator[Transaction], list[Label]]:
    """Fresh simulated history replayed at `rate`, keeping its own (simulated) event times,
    and its labels in `labelled_at` order (see `with_labels`).

    Live wall-clock time would make every card pay every few seconds at demo rates, far
    from what the model was trained on; an accelerated replay keeps the features realistic.
    """
    count, days = replay_size(rate, duration)
    now = datetime.now(UTC).replace(microsecond=0)
    start, shortened = replay_window(now, days, replayed_until)
    if shortened < days:  # the same density in fewer days: fewer payments
        count, days = max(int(shortened * HISTORY_PER_DAY), MIN_REPLAY), shortened
        say(
            f"an earlier demo's payments reach {start:%Y-%m-%d %H:%M}: {count:,} payments "
            "fit between then and the clock (`make clean` resets the stack's state)"
        )
    say(f"simulating {count:,} payments over {days:,.1f} days from {start:%Y-%m-%d %H:%M} "
        f"to replay at {rate:,.0f}/s")  # fmt: skip
    config = SimulationConfig(
        seed=7, n_transactions=count, days=days, start=start,  # the customers the model knows
        id_prefix=f"demo{uuid.uuid4().hex[:6]}",
    )  # fmt: skip
    return replay_of(config)


def replay_of(config: SimulationConfig) -> tuple[Iterator[Transaction], list[Label]]:
    """`config`'s transactions without their ground truth, and its labels in `labelled_at`
    order."""
    sim = simulate(config)
    labels = sim.labels.sort_by("labelled_at").select(list(Label.model_fields)).to_pylist()
    return (
        iter_transactions(sim.transactions.drop_columns(list(TRUTH_COLUMNS))),
        [Label.model_validate(row, strict=False) for row in labels],
    )


def with_labels(
    events: Iterator[Transaction], labels: list[Label], send: Callable[[Label], None]
) -> Iterator[Transaction]:
    """`events`, sending each label (in `labelled_at` order) once the replay's clock (the
    event time of the payment about to go out) has reached the time it was given: the
    reviewers' verdicts and chargebacks of the simulated history, as accelerated as its
    payments. Labels given after the last payment are never sent."""
    pending = iter(labels)
    upcoming = next(pending, None)
    for tx in events:
        while upcoming is not None and upcoming.labelled_at <= tx.event_time:
            send(upcoming)
            upcoming = next(pending, None)
        yield tx


class _Replayed:
    """The latest event time the demo sent, kept in the stack's state directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.until: datetime | None = None
        try:
            self.until = datetime.fromisoformat(orjson.loads(path.read_bytes())["until"])
        except (OSError, ValueError, KeyError, TypeError):
            self.until = None
        self.last: datetime | None = None

    def track(self, events: Iterator[Transaction]) -> Iterator[Transaction]:
        for tx in events:
            self.last = tx.event_time
            yield tx

    def save(self) -> None:
        if self.last is not None:
            self.path.write_bytes(orjson.dumps({"until": self.last.isoformat()}))


def run_demo(
    settings: ScorerSettings, endpoints: Endpoints, rate: float, duration: float, say: Say,
    *, drift: bool = False,
) -> None:  # fmt: skip
    """Score simulated traffic live until `duration` passes (0: until Ctrl-C). With `drift`
    the replay is the drift scenario (`demo_drift`), which ends by itself."""
    ensure_model(settings, say)
    replayed = _Replayed(settings.state_dir / "demo.json")
    loop = DriftDemo(settings, endpoints.kafka_bootstrap, say) if drift else None
    if loop is None:
        history, labels = replay_events(rate, duration, say, replayed.until)
    else:
        now = datetime.now(UTC).replace(microsecond=0)
        history, labels = replay_of(loop.world(now, replayed.until))
    scorer = _ready_scorer(settings, endpoints, say)
    children, status = _start_services(settings, endpoints, say, loop)
    watcher = _watch(settings, endpoints, loop is not None)
    producer = kafka_clients.producer(settings, endpoints.kafka_bootstrap)
    stats, stop = StreamStats(sent_at={}), threading.Event()

    def send_label(label: Label) -> None:
        producer.produce(settings.topic_labels, encode(label), key=label.transaction_id.encode())
        stats.labels += 1

    events = replayed.track(with_labels(history, labels, send_label))
    feeder = threading.Thread(
        target=stream, args=(producer, settings.topic_transactions, events, rate, stop, stats),
        kwargs={"restamp": False, "hold": loop.hold if loop else None}, daemon=True,
    )  # fmt: skip
    feeder.start()
    summary = Summary()
    started = time.monotonic()
    next_report = started + 1.0
    try:
        while duration == 0 or time.monotonic() - started < duration:
            message = watcher.poll(0.05)
            if message is not None and message.error() is None:
                _take(message, settings, loop, summary, stats)
            if loop is not None:
                ending = loop.step(replayed.last, feeder.is_alive(), summary.last_decision,
                                   children.append)  # fmt: skip
                if ending:
                    say(ending)
                    break
            if time.monotonic() >= next_report:
                say(f"{summary.line(time.monotonic() - started, stats)} | "
                    f"{status(replayed.last, summary.models)}")  # fmt: skip
                next_report += 1.0
            if scorer.poll() is not None:
                say(f"the scorer exited ({scorer.returncode}); see its log")
                break
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        feeder.join(10)
        replayed.save()
        watcher.close()
        _stop(scorer, *children)  # the archiver flushes what it holds
    say(summary.line(time.monotonic() - started, stats))


Status = Callable[[datetime | None, Counter[str]], str]


def _start_services(
    settings: ScorerSettings, endpoints: Endpoints, say: Say, loop: DriftDemo | None
) -> tuple[list[Child], Status]:
    """The archiver, the monitor (the drift demo starts it later) and the trainer; and what
    the summary line adds: drift status, refreshed every 5 s."""
    state = settings.state_dir
    children = [start_archiver(endpoints, state / "archiver.log",
                               **(loop.archiver_env() if loop else {}))]  # fmt: skip
    say(f"archiver pid {children[0].pid}; log {state / 'archiver.log'}")
    review, queue = start_review(settings, endpoints, say)
    children.append(review)
    if loop is not None:
        children.append(start_trainer(endpoints, state, **loop.trainer_env()))
        say(f"trainer pid {children[-1].pid}; log {state / 'trainer.log'}")
        loop.start_monitor = lambda env: start_monitor(endpoints, state, loop.monitor_port, **env)
        return children, _joined(loop.status, queue)
    started, port = start_loop(endpoints, state, say)
    drift = _Refreshed(lambda: drift_line(port), "drift: monitor starting")
    return children + started, _joined(drift, queue)


def _joined(*parts: Status) -> Status:
    """Status lines side by side."""
    return lambda replayed, models: " | ".join(part(replayed, models) for part in parts)


class _Refreshed:
    """A status line read at most every 5 s (a `Status`); a failed read keeps the last."""

    def __init__(self, read: Callable[[], str], line: str) -> None:
        self.read, self.line, self.at = read, line, 0.0

    def __call__(self, _replayed: datetime | None, _models: Counter[str]) -> str:
        if time.monotonic() - self.at >= 5:
            self.at = time.monotonic()
            try:
                self.line = self.read()
            except Exception as exc:
                self.line = f"{self.line.split(':')[0]}: unknown ({type(exc).__name__})"
        return self.line


def _take(message: Message, settings: ScorerSettings, loop: DriftDemo | None,
          summary: Summary, stats: StreamStats) -> None:  # fmt: skip
    """One record the watcher read: a loop step, a dead letter or a decision."""
    topic, value = message.topic() or "", message.value() or b""
    if loop is not None and loop.on_record(topic, value):
        return
    if topic == settings.topic_dlq:
        summary.dlq += 1
    else:
        summary.add_decision(value or b"{}", time.time(),
                             stats.sent_at if stats.sent_at is not None else {})  # fmt: skip


def _ready_scorer(settings: ScorerSettings, endpoints: Endpoints, say: Say) -> Child:
    port = free_port()
    scorer = start_scorer(endpoints, port, settings.state_dir / "scorer.log")
    say(f"scorer pid {scorer.pid}; metrics http://127.0.0.1:{port}/metrics; "
        f"log {settings.state_dir / 'scorer.log'}")  # fmt: skip
    _await_ready(port, scorer, timeout_s=90)
    return scorer


def _watch(settings: ScorerSettings, endpoints: Endpoints, loop: bool = False) -> Consumer:
    """A consumer of the decisions and dead letters (with `loop`, the retrain triggers and
    model events too) from their end, once assigned."""
    watcher = kafka_clients.consumer(
        settings, endpoints.kafka_bootstrap, f"fraudctl-demo-{uuid.uuid4().hex[:8]}",
        {"auto.offset.reset": "latest"},
    )  # fmt: skip
    assigned = threading.Event()
    topics = [settings.topic_decisions, settings.topic_dlq]
    if loop:
        topics += [settings.topic_retrain, settings.topic_models]
    watcher.subscribe(topics, on_assign=lambda *_: assigned.set())
    deadline = time.monotonic() + 30
    while not assigned.is_set() and time.monotonic() < deadline:
        watcher.poll(0.1)
    return watcher


def _stop(*children: subprocess.Popen[bytes]) -> None:
    """SIGTERM each child, then wait for all of them."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        child.wait(30)


def _await_ready(port: int, scorer: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Wait for the scorer's /readyz (partitions assigned, model or rules loaded)."""
    deadline = time.monotonic() + timeout_s
    url = f"http://127.0.0.1:{port}/readyz"
    while time.monotonic() < deadline and scorer.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise LocalStackError(f"the scorer did not become ready within {timeout_s:.0f} s")
