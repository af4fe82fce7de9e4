"""The review service as a real process on the real broker: cases come in from
`fraud.review` (a bad record kept with its reason), verdicts go out on `fraud.labels`
exactly once, even when the process is killed between the database commit and the
produce, inside the Kafka transaction, or after the Kafka commit."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from fraudstream import kafka_clients
from fraudstream.contracts import Label, ReviewCase, encode
from fraudstream.localstack import processes
from fraudstream.localstack.stack import Endpoints
from fraudstream.review.auth import Principal, Role
from fraudstream.review.intake import OFFSETS_BY_HAND, Intake
from fraudstream.review.metrics import ReviewMetrics
from fraudstream.review.outbox import HEADER, LabelRelay
from fraudstream.review.schema import OutboxLabel, RejectedRecord
from fraudstream.review.store import CaseStore
from fraudstream.review.triage import ReviewVerdict
from fraudstream.settings import CommonSettings
from tests.integration.review_support import StoreFactory, review_case
from tests.integration.scorer_support import scrape_metrics, start_module
from tests.waiting import await_condition

ANN = Principal("ann", Role.ANALYST, "csrf")


class ReviewProcess:
    """`python -m fraudstream.review.service` with the test's database and topics."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.env = env
        self.metrics_port = processes.free_port()
        self.log = home / "review.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, fault: str | None = None) -> None:
        env = {**self.env, "FRAUD_METRICS_PORT": str(self.metrics_port),
               "FRAUD_FAULT_POINT": fault or ""}  # fmt: skip
        self.proc = start_module("fraudstream.review.service", env, self.log)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/readyz",
                                        timeout=2) as response:  # fmt: skip
                return bool(response.status == 200)
        except OSError:
            return False

    def wait(self, timeout_s: float = 60) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"the review service did not end within {timeout_s:g}s:\n"
                        f"{processes.tail(self.log, 40)}")  # fmt: skip

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(30)


@pytest.fixture
def service(
    review_db: str, tmp_path: Path, endpoints: Endpoints, make_topic: Callable[..., str],
    unique: Callable[[str], str],
) -> Iterator[ReviewProcess]:  # fmt: skip
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka_bootstrap, "REDIS_URL": endpoints.redis_url,
        "FRAUD_STATE_DIR": str(tmp_path / "state"), "FRAUD_REVIEW_DATABASE_URL": review_db,
        "FRAUD_TOPIC_REVIEW": make_topic(partitions=2), "FRAUD_TOPIC_LABELS": make_topic(2),
        "FRAUD_REVIEW_GROUP": unique("review"),
        "FRAUD_REVIEW_TRANSACTIONAL_ID": unique("relay"), "FRAUD_REVIEW_PORT": "0",
        "FRAUD_REVIEW_RELAY_INTERVAL_S": "0.1", "FRAUD_REDIS_PREFIX": unique("rv"),
    }  # fmt: skip
    process = ReviewProcess(tmp_path, env)
    yield process
    process.stop()


def read_all(settings: CommonSettings, endpoints: Endpoints, topic: str) -> list[Label]:
    """Every committed record on `topic`, read to its end (no waiting for silence)."""
    consumer: Consumer = kafka_clients.consumer(
        settings, endpoints.kafka_bootstrap, f"check-{topic}", {"enable.partition.eof": True}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        done: set[int] = set()
        labels: list[tuple[int, Label]] = []
        while len(done) < len(partitions):
            for msg in consumer.consume(100, timeout=1.0):
                error = msg.error()
                if error is not None:
                    assert error.code() == KafkaError._PARTITION_EOF, error
                    done.add(msg.partition() or 0)
                    continue
                header = dict(msg.headers() or [])[HEADER]
                outbox_id = int(header.decode() if isinstance(header, bytes) else str(header))
                labels.append((outbox_id, Label.model_validate_json(msg.value() or b"")))
        ids = Counter(i for i, _ in labels)
        assert all(n == 1 for n in ids.values()), f"outbox ids on the topic twice: {ids}"
        return [label for _, label in labels]
    finally:
        consumer.close()


def decide(store: CaseStore, tx_ids: list[str]) -> None:
    now = datetime.now(UTC)
    for tx_id in tx_ids:
        store.claim(tx_id, ANN, now)
        store.decide(tx_id, ANN, ReviewVerdict.FRAUD, "", now)


def count(store: CaseStore, query: object) -> int:
    with store.sessions() as db:
        return int(db.scalar(query) or 0)  # type: ignore[call-overload]


PENDING = select(func.count()).where(OutboxLabel.sent_at.is_(None))
FAULTS = ("relay_before_produce", "relay_before_commit", "relay_after_commit")


@pytest.mark.parametrize("fault", FAULTS)
def test_verdicts_reach_the_labels_topic_exactly_once_across_a_kill(  # noqa: PLR0917 - fixtures
    fault: str, service: ReviewProcess, store_factory: StoreFactory,
    make_producer: Callable[..., Producer], settings: CommonSettings, endpoints: Endpoints,
) -> None:  # fmt: skip
    producer = make_producer()
    review_topic = service.env["FRAUD_TOPIC_REVIEW"]
    for i in range(6):
        case = review_case(f"rv-{i}", amount=100.0 + i, created_at=datetime.now(UTC))
        producer.produce(review_topic, key=case.transaction.transaction_id.encode(),
                         value=encode(case))  # fmt: skip
    producer.produce(review_topic, key=b"bad", value=b'{"schema_version": 1, "oops": true}')
    producer.flush(10)
    store = store_factory()
    service.start(fault=f"{fault}:1")
    await_condition(lambda: store.summary(datetime.now(UTC)).depth == 6, 60,
                    "the six cases to reach the case store")  # fmt: skip
    assert count(store, select(func.count()).select_from(RejectedRecord)) == 1
    decide(store, ["rv-0", "rv-1", "rv-2"])
    assert service.wait() == -signal.SIGKILL, processes.tail(service.log, 30)

    service.start()
    await_condition(lambda: count(store, PENDING) == 0, 60, "the outbox to drain after restart")
    decide(store, ["rv-3", "rv-4"])
    await_condition(lambda: count(store, PENDING) == 0, 60, "the new verdicts to be relayed")
    labels = read_all(settings, endpoints, service.env["FRAUD_TOPIC_LABELS"])
    assert sorted(label.transaction_id for label in labels) == [f"rv-{i}" for i in range(5)]
    assert {label.actor for label in labels} == {"ann"}
    await_condition(service.ready, 30, "the review service to report ready")
    depth = 'fraud_review_queue_depth{queue="standard"} 1.0'  # rv-5 is still open
    await_condition(lambda: depth in scrape_metrics(service.metrics_port), 30,
                    "the queue depth gauge to show the one open case")  # fmt: skip
    assert service.stop() == 0


class FailingOnce(CaseStore):
    """A case store whose first write fails (the database briefly unreachable)."""

    failed = False

    def ingest(self, cases: Sequence[ReviewCase], now: datetime) -> int:
        if not self.failed:
            self.failed = True
            raise OperationalError("INSERT", {}, Exception("database unreachable"))
        return super().ingest(cases, now)


def test_intake_reads_a_batch_again_when_storing_it_failed(  # noqa: PLR0917 - fixtures
    store_factory: StoreFactory, make_topic: Callable[..., str],
    make_producer: Callable[..., Producer], settings: CommonSettings, endpoints: Endpoints,
    unique: Callable[[str], str],
) -> None:  # fmt: skip
    topic = make_topic(partitions=2)
    producer = make_producer()
    for i in range(10):
        case = review_case(f"again-{i}", created_at=datetime.now(UTC))
        producer.produce(topic, key=f"again-{i}".encode(), value=encode(case))
    producer.flush(10)
    base = store_factory()
    store = FailingOnce(base.engine, base.rules)
    metrics = ReviewMetrics(CollectorRegistry())
    consumer = kafka_clients.consumer(
        settings, endpoints.kafka_bootstrap, unique("intake"), OFFSETS_BY_HAND
    )
    intake = Intake(store, consumer, topic, metrics, 64 * 1024)
    try:
        added = 0
        failures = 0
        deadline = time.monotonic() + 60
        while added < 10 and time.monotonic() < deadline:
            try:
                added += intake.poll_once(timeout_s=0.5)
            except OperationalError:
                failures += 1
        assert (added, failures) == (10, 1)
        assert base.summary(datetime.now(UTC)).depth == 10
    finally:
        intake.close()


def test_the_relay_recovers_in_process_after_a_failed_commit(
    store_factory: StoreFactory, make_topic: Callable[..., str], settings: CommonSettings,
    endpoints: Endpoints, unique: Callable[[str], str],
) -> None:  # fmt: skip
    """A commit that fails (here: raises once) leaves the relay restarting on a fresh
    producer and reading the topic back: the labels go out once, without a restart."""
    topic = make_topic(partitions=2)
    store = store_factory()
    store.ingest([review_case(f"rc-{i}") for i in range(3)], datetime.now(UTC))
    decide(store, ["rc-0", "rc-1", "rc-2"])
    transactional = {"transactional.id": unique("relay"), "linger.ms": 0}
    made: list[Producer] = []

    class CommitFailsOnce(Producer):
        def commit_transaction(self, *args: object) -> None:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "commit timed out (test)"))

    def producer() -> Producer:
        config = {**settings.kafka_client_config(endpoints.kafka_bootstrap), **transactional,
                  "enable.idempotence": True}  # fmt: skip
        made.append(CommitFailsOnce(config) if not made else Producer(config))
        return made[-1]

    relay = LabelRelay(
        store, producer,
        lambda: kafka_clients.consumer(settings, endpoints.kafka_bootstrap, unique("relay-read"),
                                       {"enable.partition.eof": True}),
        topic, timeout_s=10,
    )  # fmt: skip
    relay.start()
    with pytest.raises(KafkaException, match="commit timed out"):
        relay.relay_once()
    assert not relay.started
    relay.start()
    assert relay.relay_once() == 3
    assert len(made) == 2
    assert count(store, PENDING) == 0
    labels = read_all(settings, endpoints, topic)
    assert sorted(label.transaction_id for label in labels) == ["rc-0", "rc-1", "rc-2"]
