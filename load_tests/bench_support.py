"""Plumbing of bench_scorer.py: deployments, child processes, CPU and metrics probes,
the open-loop sender, the latency reader and the exactly-once passthrough worker.
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
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from fraudstream import kafka_clients
from fraudstream.localstack.stack import Endpoints, LocalStack
from fraudstream.scoring.runner import consumer_tuning
from fraudstream.scoring.settings import ScorerSettings
from fraudstream.settings import CommonSettings
from fraudstream.topics import provision

REPO = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The scorer's own consumer settings (runner.py), so the passthrough consumes alike.
Snapshot = dict[str, float]
Pids = dict[str, int | None]
# librdkafka settings forced onto a child's clients, for what-if variants (JSON object
# {"producer": {...}, "consumer": {...}}).
OVERRIDES_ENV = "BENCH_CLIENT_OVERRIDES"


@dataclass(frozen=True)
class Load:
    """Pre-encoded transactions: payload, key (card) and id, in event order."""

    payloads: list[bytes]
    keys: list[bytes]
    ids: list[str]


@dataclass(frozen=True)
class Deployment:
    """One isolated service deployment: own topics, group, Redis prefix (env + settings)."""

    env: dict[str, str]
    settings: ScorerSettings

    def topics(self) -> list[str]:
        return [v for k, v in self.env.items() if k.startswith("FRAUD_TOPIC_")]


def settings_from_env(env: dict[str, str]) -> ScorerSettings:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return ScorerSettings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def deploy(
    endpoints: Endpoints, admin: AdminClient, tag: str, registry_dir: Path, batch_wait_ms: int
) -> Deployment:
    """Environment of a fresh deployment, with its topics provisioned."""
    run = f"{tag}-{uuid.uuid4().hex[:6]}"
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka_bootstrap,
        "REDIS_URL": endpoints.redis_url,
        "FRAUD_SCORER_GROUP_ID": f"bench-{run}",
        "FRAUD_REDIS_PREFIX": f"b{run}"[:32],
        "FRAUD_REGISTRY_DIR": str(registry_dir),
        "FRAUD_RULES_FILE": str(REPO / "config" / "rules.yaml"),
        "FRAUD_METRICS_PORT": "0",
        "FRAUD_SCORER_BATCH_WAIT_MS": str(batch_wait_ms),
    }
    for name in ("transactions", "dlq", "decisions", "review", "labels", "retrain", "models"):
        env[f"FRAUD_TOPIC_{name.upper()}"] = f"bench-{run}.{name}"
    settings = settings_from_env(env)
    provision(admin, settings)
    return Deployment(env, settings)


def require_local(bootstrap: str, redis_url: str) -> None:
    hosts = {urlparse(f"//{b.strip()}").hostname for b in bootstrap.split(",")}
    hosts.add(urlparse(redis_url).hostname)
    if not hosts <= {"127.0.0.1", "localhost"}:
        raise SystemExit(f"refusing non-local targets {sorted(map(str, hosts))}: 127.0.0.1 only")


@contextmanager
def infrastructure(workdir: Path) -> Iterator[tuple[Endpoints, Pids]]:
    """KAFKA_BOOTSTRAP_SERVERS + REDIS_URL if both set (pids unknown), else a private stack."""
    kafka_env, redis_env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), os.environ.get("REDIS_URL")
    if kafka_env and redis_env:
        require_local(kafka_env, redis_env)
        yield Endpoints(kafka_env, redis_env), {"broker": None, "redis": None}
        return
    say: Callable[[str], None] = lambda line: print(f"  {line}")  # noqa: E731
    stack = LocalStack(CommonSettings(state_dir=workdir / "stack", cache_dir=REPO / ".cache"))
    try:
        state = stack.up(say=say)
        yield (Endpoints(state.kafka_bootstrap, state.redis_url),
               {"broker": state.kafka_pid, "redis": state.redis_pid})  # fmt: skip
    finally:
        stack.down(say=say)


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of a process (all its threads) from /proc; NaN when unknown."""
    if pid is None:
        return float("nan")
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = stat.rsplit(")", 1)[1].split()  # fields[0] is field 3 (state)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all processes, ours and others')."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle, iowait = ticks[3], ticks[4]
    return (sum(ticks[:7]) - idle - iowait) / CLOCK_TICKS  # steal excluded


def scrape_stages(url: str | None) -> Snapshot:
    """The scorer's per-stage seconds and batch counters from its /metrics (empty if none)."""
    if url is None:
        return {}
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - 127.0.0.1
            text = response.read().decode()
    except OSError:
        return {}
    found: Snapshot = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "fraud_stage_latency_seconds_sum":
                found[f"stage:{sample.labels['stage']}"] = sample.value
            elif sample.name in {"fraud_batch_size_sum", "fraud_batch_size_count"}:
                found[sample.name] = sample.value
    return found


@dataclass
class Probe:
    """CPU seconds of named processes (and scorer stage times), sampled on demand."""

    pids: dict[str, int | None]
    metrics_url: str | None = None

    def snapshot(self) -> Snapshot:
        cpu = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        cpu["others"] = machine_busy_seconds() - sum(cpu.values())  # NaN if a pid is unknown
        return {**cpu, "wall": time.monotonic(), **scrape_stages(self.metrics_url)}


def difference(after: Snapshot, before: Snapshot) -> Snapshot:
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


@dataclass
class Service:
    """A child process (scorer or passthrough) logging to a file; stopped with SIGTERM."""

    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as sink:
            self.proc = subprocess.Popen(
                self.argv, env={**os.environ, **self.env}, cwd=REPO,
                stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def await_line(self, marker: str, timeout_s: float) -> str:
        """The first log line containing `marker`; raises if the process dies or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = next((x for x in self.log.read_text().splitlines() if marker in x), None)
            if line is not None:
                return line
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"{self.argv[-1]} exited:\n{self.tail()}")
            time.sleep(0.1)
        raise TimeoutError(f"no {marker!r} in {self.log} after {timeout_s:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM (the batch in flight is finished), SIGKILL if it takes too long."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


class DecisionReader:
    """read_committed consumer of an output topic, in a thread, with `poll()`: records the
    arrival time (time.monotonic) of each transaction id."""

    fetch_wait_ms = 100  # a committed transaction's markers end the broker's wait at once

    def __init__(self, settings: ScorerSettings, topic: str) -> None:
        bootstrap = settings.kafka_bootstrap_servers or ""
        self.consumer = kafka_clients.consumer(
            settings, bootstrap, f"bench-reader-{uuid.uuid4().hex[:8]}",
            {"fetch.wait.max.ms": self.fetch_wait_ms, "enable.partition.eof": False},
        )  # fmt: skip
        partitions = range(settings.topic_partitions)
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        self.arrivals: dict[str, float] = {}
        self.reported_ms: dict[str, float] = {}  # the scorer's own `latency_ms`, if any
        self.duplicates = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="decision-reader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.consumer.poll(0.05)
            if message is None:
                continue
            arrived = time.monotonic()
            error = message.error()
            if error is not None:
                self.errors.append(str(error))
                continue
            decision = orjson.loads(message.value() or b"{}")
            tx_id = decision["transaction_id"]
            if tx_id in self.arrivals:
                self.duplicates += 1
                continue
            self.arrivals[tx_id] = arrived
            if "latency_ms" in decision:
                self.reported_ms[tx_id] = decision["latency_ms"]

    def wait_for(self, count: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while len(self.arrivals) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return len(self.arrivals) >= count

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.consumer.close()


@contextmanager
def decision_reader(settings: ScorerSettings) -> Iterator[DecisionReader]:
    reader = DecisionReader(settings, settings.topic_decisions)
    reader.start()
    try:
        yield reader
    finally:
        reader.close()


def produce(producer: Producer, topic: str, value: bytes, key: bytes) -> None:
    while True:
        try:
            producer.produce(topic, value, key=key)
            return
        except BufferError:
            producer.poll(0.01)


def send_open_loop(
    producer: Producer,
    topic: str,
    load: Load,
    *,
    count: int,
    rate: float,
    start: float,
    at_warm: tuple[float, Callable[[], None]],
) -> list[float]:
    """Send event i at `start + i / rate` (monotonic clock) without waiting for acks; call
    `at_warm[1]` once at `at_warm[0]`. Returns how late each burst's first send was (s)."""
    lags: list[float] = []
    warm_at, on_warm = at_warm
    sent = 0
    while sent < count:
        now = time.monotonic()
        if now >= warm_at:
            on_warm()
            warm_at = float("inf")
        due = min(count, int((now - start) * rate) + 1)
        if sent < due:
            lags.append(now - (start + sent / rate))
        for index in range(sent, due):
            produce(producer, topic, load.payloads[index], load.keys[index])
        sent = max(sent, due)
        producer.poll(0)
        delay = start + sent / rate - time.monotonic()
        if delay > 0:
            time.sleep(min(delay, 0.002))
    return lags


def committed_total(watcher: Consumer, partitions: list[TopicPartition]) -> int:
    offsets = watcher.committed(partitions, timeout=5)
    return sum(tp.offset for tp in offsets if tp.offset >= 0)


def commit_watcher(settings: ScorerSettings) -> tuple[Consumer, list[TopicPartition]]:
    """A non-member client of the service's group that reads its committed offsets."""
    consumer = kafka_clients.consumer(
        settings, settings.kafka_bootstrap_servers or "", settings.scorer_group_id,
        {"isolation.level": "read_uncommitted"},  # no require_stable waits on open txns
    )  # fmt: skip
    topic = settings.topic_transactions
    return consumer, [TopicPartition(topic, p) for p in range(settings.topic_partitions)]


@dataclass
class Passthrough:
    """Consume -> produce copy, batched like the scorer (the baseline): in one transaction
    per batch, or at least once (FRAUD_SCORER_DELIVERY) like the scorer's mode."""

    settings: ScorerSettings = field(default_factory=ScorerSettings)

    def run(self) -> None:
        settings, stop = self.settings, threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda _n, _f: stop.set())
        bootstrap = settings.kafka_bootstrap_servers or ""
        consumer = kafka_clients.consumer(
            settings, bootstrap, settings.scorer_group_id,
            {**consumer_tuning(settings.scorer_batch_wait_ms), **client_overrides("consumer")},
        )  # fmt: skip
        exactly_once = settings.scorer_delivery == "exactly_once"
        transactional = {"transactional.id": settings.transactional_id,
                         "transaction.timeout.ms": 60_000} if exactly_once else {}  # fmt: skip
        producer = kafka_clients.producer(
            settings, bootstrap,
            {**transactional, "linger.ms": 1, **client_overrides("producer")},
        )  # fmt: skip
        if exactly_once:
            producer.init_transactions(30)
        consumer.subscribe([settings.topic_transactions], on_assign=_say_assigned)
        wait = settings.scorer_batch_wait_ms / 1000
        try:
            while not stop.is_set():
                batch = consumer.consume(num_messages=settings.scorer_batch_max, timeout=wait)
                messages = [m for m in batch if m.error() is None]
                if messages and exactly_once:
                    self._copy(consumer, producer, messages)
                elif messages:
                    self._copy_at_least_once(consumer, producer, messages)
        finally:
            consumer.close()
            producer.flush(5)

    def _copy_at_least_once(
        self, consumer: Consumer, producer: Producer, messages: list[Message]
    ) -> None:
        """Produce, wait for every acknowledgement, then commit the positions."""
        topic = self.settings.topic_decisions
        for message in messages:
            tx_id = orjson.loads(message.value() or b"{}")["transaction_id"]
            produce(producer, topic, orjson.dumps({"transaction_id": tx_id}), message.key() or b"")
        positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
        if producer.flush(self.settings.scorer_transaction_timeout_s) != 0:
            raise SystemExit("outputs not acknowledged in time")
        consumer.commit(offsets=positions, asynchronous=False)

    def _copy(self, consumer: Consumer, producer: Producer, messages: list[Message]) -> None:
        timeout, topic = self.settings.scorer_transaction_timeout_s, self.settings.topic_decisions
        producer.begin_transaction()
        try:
            for message in messages:
                tx_id = orjson.loads(message.value() or b"{}")["transaction_id"]
                value = orjson.dumps({"transaction_id": tx_id})
                produce(producer, topic, value, message.key() or b"")
            positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
            producer.send_offsets_to_transaction(
                positions, consumer.consumer_group_metadata(), timeout
            )
            producer.commit_transaction(timeout)
        except KafkaException as exc:
            if not exc.args[0].txn_requires_abort():
                raise
            print(f"aborting: {exc}", flush=True)
            producer.abort_transaction(timeout)
            first: dict[tuple[str, int], int] = {}
            for m in messages:
                place = (m.topic() or "", m.partition() or 0)
                first[place] = min(first.get(place, m.offset() or 0), m.offset() or 0)
            for (name, partition), offset in first.items():
                consumer.seek(TopicPartition(name, partition, offset))


def _say_assigned(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
    print(f"assigned {sorted((p.topic, p.partition) for p in partitions)}", flush=True)


def client_overrides(kind: str) -> dict[str, Any]:
    overrides: dict[str, dict[str, Any]] = orjson.loads(os.environ.get(OVERRIDES_ENV) or b"{}")
    return dict(overrides.get(kind, {}))


def scorer_with_overrides() -> None:
    """The unmodified scorer, but its Kafka clients get `client_overrides()` (what-if)."""
    make_producer, make_consumer = kafka_clients.producer, kafka_clients.consumer
    producer_extra, consumer_extra = client_overrides("producer"), client_overrides("consumer")

    def producer(
        settings: CommonSettings, bootstrap: str, overrides: Mapping[str, Any] | None = None
    ) -> Producer:
        return make_producer(settings, bootstrap, {**(overrides or {}), **producer_extra})

    def consumer(
        settings: CommonSettings,
        bootstrap: str,
        group_id: str,
        overrides: Mapping[str, Any] | None = None,
    ) -> Consumer:
        return make_consumer(settings, bootstrap, group_id, {**(overrides or {}), **consumer_extra})

    kafka_clients.producer, kafka_clients.consumer = producer, consumer
    from fraudstream.scoring import service  # noqa: PLC0415 - only this child needs it

    service.main()


def service_argv(passthrough: bool, overridden: bool) -> list[str]:
    """The scorer as deployed, or a worker of bench_scorer.py (passthrough, what-if scorer)."""
    script = str(Path(__file__).resolve().with_name("bench_scorer.py"))
    if passthrough:
        return [sys.executable, script, "--passthrough-worker"]
    if overridden:
        return [sys.executable, script, "--scorer-worker"]
    return [sys.executable, "-m", "fraudstream.scoring.service"]
