"""The trainer service: `fraud.retrain` triggers become registered challengers, and the
promotion policy moves them along, each step announced on `fraud.models`.

One job at a time, in a worker thread; the main loop keeps polling meanwhile (so the
consumer stays in its group however long training takes), and a trigger that arrives
while a job runs is coalesced into it: counted, named in the version's evaluation, not
queued. With `trainer_wait_days` a drift trigger first waits until the archive holds that
much mature data after it (a challenger trained and judged on data from before the change
learns nothing about it), counted in event time from the archive's newest transaction
when the trigger is first checked, which is where the drift was seen (the trigger's own
times are the monitor's clock, `decided_at`: far off event time in a replay). Triggers
meanwhile join the waiting one.
Offsets are committed when the job that covers them has finished, so a trainer
killed mid-job retrains after its restart; a trigger whose version is already registered
(the registry's `registered` events name it) is not trained twice. Between triggers the
main loop applies the promotion policy every `trainer_check_s`.

A separate process from the scorer by design: training holds about 1.4 KB per archived
row (`load_tests/bench_training.py`), which must never land in a serving process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError

from fraudstream import kafka_clients
from fraudstream.contracts import ModelEvent, ModelEventType, RetrainTrigger, encode
from fraudstream.errors import FraudStreamError
from fraudstream.history.backtest_cli import local_root
from fraudstream.history.query import Archive, TopicNames
from fraudstream.localstack.stack import resolve_endpoints
from fraudstream.observability.http import HealthState, serve
from fraudstream.observability.process import run_service, stop_on_signals
from fraudstream.registry import ModelNotFoundError, Registry
from fraudstream.retrain.cli import MANUAL
from fraudstream.retrain.job import Evaluation, RetrainResult, plan_windows, retrain
from fraudstream.retrain.policy import PromotionPolicy
from fraudstream.retrain.settings import TrainerSettings

_log = logging.getLogger(__name__)
POLL_S = 0.5
Retrain = Callable[[TrainerSettings, Archive, Registry, list[str]], RetrainResult]
Policy = Callable[[Registry, Archive, datetime], list[ModelEvent]]


class TrainerMetrics:
    """Runs by outcome, triggers by what became of them, the running job, stage times."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.runs = Counter("fraud_trainer_runs", "Retrain jobs by outcome", ("outcome",),
                            registry=self.registry)  # fmt: skip
        self.triggers = Counter(
            "fraud_trainer_triggers", "Triggers read: started a job, coalesced into the "
            "running or waiting one, deferred to wait for data, already trained, invalid "
            "or for another model", ("outcome",),
            registry=self.registry,
        )  # fmt: skip
        self.running = Gauge("fraud_trainer_running", "1 while a retrain job runs",
                             registry=self.registry)  # fmt: skip
        self.waiting = Gauge("fraud_trainer_waiting", "1 while a trigger waits for data "
                             "after its drifted window (trainer_wait_days)",
                             registry=self.registry)  # fmt: skip
        self.stage_seconds = Gauge("fraud_trainer_stage_seconds", "Last job's time per stage",
                                   ("stage",), registry=self.registry)  # fmt: skip
        self.last_success = Gauge("fraud_trainer_last_registered_timestamp_seconds",
                                  "When the last challenger was registered",
                                  registry=self.registry)  # fmt: skip
        self.model_events = Counter("fraud_model_events", "Events sent to fraud.models",
                                    ("event",), registry=self.registry)  # fmt: skip
        self.policy_errors = Counter("fraud_trainer_policy_errors",
                                     "Promotion policy checks that failed",
                                     registry=self.registry)  # fmt: skip


@dataclass
class _Job:
    triggers: list[str]
    thread: threading.Thread | None = None
    result: RetrainResult | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Waiting:
    triggers: list[str]
    ready_at: datetime | None = None  # the evaluation window must end at or after this


class Trainer:
    """The main loop's state: the running job, offsets to commit, the policy's clock."""

    def __init__(
        self, settings: TrainerSettings, consumer: Consumer, producer: Producer, *,
        metrics: TrainerMetrics | None = None, health: HealthState | None = None,
        run_job: Retrain | None = None, policy: Policy | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:  # fmt: skip
        self.settings = settings
        self.consumer = consumer
        self.producer = producer
        self.metrics = metrics or TrainerMetrics()
        self.health = health or HealthState(liveness_timeout_s=300.0)
        self.registry = Registry(settings.registry_dir)
        self.root = local_root(settings.archive_url)
        self._run_job = run_job or _default_job
        self._policy = policy
        self._clock = clock
        self.job: _Job | None = None
        self.waiting: _Waiting | None = None
        self._next_wait_check = 0.0
        self._uncommitted: dict[int, int] = {}  # partition -> next offset
        self._next_check = 0.0

    def run(self, stop: threading.Event) -> None:
        """Poll, hand triggers to jobs, commit finished ones, apply the policy; until `stop`.
        A job still running then is abandoned uncommitted: its triggers are read again
        after a restart (registry writes are atomic, so nothing half-written is left)."""
        self.consumer.subscribe(
            [self.settings.topic_retrain],
            on_assign=lambda _c, parts: self.health.set_assigned(len(parts)),
        )
        while not stop.is_set():
            message = self.consumer.poll(POLL_S)
            self.health.mark_progress()
            if message is not None:
                self.on_message(message)
            self.finish_job()
            self.start_when_ready()
            self.apply_policy()
        if self.job is not None or self.waiting is not None:
            _log.warning("stopping with a retrain running or waiting: its triggers are not "
                         "committed")  # fmt: skip
        else:
            self._commit()

    def on_message(self, message: Message) -> None:
        """One record of `fraud.retrain`: a new job, or coalesced into the running one."""
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                _log.warning("consumer error: %s", error)
            return
        partition, offset = message.partition(), message.offset()
        if partition is not None and offset is not None:
            self._uncommitted[partition] = offset + 1
        try:
            trigger = RetrainTrigger.model_validate_json(message.value() or b"")
        except ValidationError as exc:
            _log.error("invalid trigger at offset %s skipped: %s", offset,
                       exc.errors()[0]["msg"])  # fmt: skip
            self.metrics.triggers.labels("invalid").inc()
            return
        if trigger.model_name != self.settings.model_name:
            self.metrics.triggers.labels("other_model").inc()
            return
        held = self.job or self.waiting
        if held is not None:
            held.triggers.append(trigger.trigger_id)
            self.metrics.triggers.labels("coalesced").inc()
            _log.info("trigger %s (%s) coalesced into the %s job", trigger.trigger_id,
                      trigger.detector, "running" if self.job else "waiting")  # fmt: skip
            return
        if self._already_trained(trigger.trigger_id):
            self.metrics.triggers.labels("already_trained").inc()
            _log.info("trigger %s already has a registered version", trigger.trigger_id)
            self._commit()
            return
        seen = (
            f"trigger {trigger.trigger_id} from {trigger.detector} "
            f"({trigger.feature or '-'} {trigger.statistic}={trigger.value:.4g})"
        )
        wait = self.settings.trainer_wait_days
        if wait > 0 and trigger.detector != MANUAL:
            self.waiting = _Waiting([trigger.trigger_id])
            self.metrics.triggers.labels("deferred").inc()
            self.metrics.waiting.set(1)
            _log.info("%s: waiting for %g days of mature data after it", seen, wait)
            self._next_wait_check = 0.0
            return
        self.metrics.triggers.labels("started").inc()
        _log.info("%s: retraining", seen)
        self.start_job([trigger.trigger_id])

    def start_when_ready(self) -> None:
        """Start the waiting trigger's job once the evaluation window a retrain would use
        ends `trainer_wait_days` after the newest archived transaction at the first check
        (checked every `trainer_check_s`)."""
        waiting = self.waiting
        if waiting is None or self.job is not None or time.monotonic() < self._next_wait_check:
            return
        self._next_wait_check = time.monotonic() + self.settings.trainer_check_s
        try:
            newest = self.newest_archived()
        except Exception as exc:  # the next check tries again
            _log.warning("archive not readable to check the waiting trigger: %s", exc)
            return
        if newest is None:
            return
        if waiting.ready_at is None:
            waiting.ready_at = newest + timedelta(days=self.settings.trainer_wait_days)
            _log.info(
                "retraining once mature data reaches %s (archived to %s)",
                f"{waiting.ready_at:%Y-%m-%d %H:%M}",
                f"{newest:%Y-%m-%d %H:%M}",
            )
        windows = plan_windows(self.settings, newest, self._clock())
        if windows.eval_end < waiting.ready_at:
            return
        self.waiting = None
        self.metrics.waiting.set(0)
        self.metrics.triggers.labels("started").inc()
        _log.info("mature data reaches %s: retraining for %s",
                  f"{windows.eval_end:%Y-%m-%d %H:%M}", " ".join(waiting.triggers))  # fmt: skip
        self.start_job(waiting.triggers)

    def start_job(self, triggers: list[str]) -> None:
        """Run one retrain in a worker thread (the caller checked none runs)."""
        job = _Job(triggers)
        job.thread = threading.Thread(target=self._work, args=(job,), name="retrain",
                                      daemon=True)  # fmt: skip
        self.job = job
        self.metrics.running.set(1)
        job.thread.start()

    def _work(self, job: _Job) -> None:
        try:
            with Archive(self.root, TopicNames.from_settings(self.settings)) as archive:
                job.result = self._run_job(self.settings, archive, self.registry, job.triggers)
        except Exception as exc:  # reported by finish_job: the service keeps running
            job.error = exc
        finally:
            job.done.set()

    def finish_job(self) -> None:
        """If the running job has finished: record it, announce it, commit its triggers."""
        job = self.job
        if job is None or not job.done.is_set():
            return
        self.job = None
        self.metrics.running.set(0)
        if job.error is not None:
            kind = "error" if isinstance(job.error, FraudStreamError) else "crash"
            self.metrics.runs.labels(kind).inc()
            _log.error("retrain for %s failed: %s", job.triggers[0], job.error,
                       exc_info=kind == "crash")  # fmt: skip
        elif job.result is not None:
            self._record(job.result)
        self._commit()

    def _record(self, result: RetrainResult) -> None:
        self.metrics.runs.labels(result.outcome).inc()
        for stage, seconds in result.seconds.items():
            self.metrics.stage_seconds.labels(stage).set(seconds)
        if result.outcome != "registered" or result.version is None:
            _log.warning("retrain skipped: %s", result.reason)
            return
        self.metrics.last_success.set(time.time())
        name = self.settings.model_name
        events = [e for e in self.registry.events(name) if e.version == result.version]
        self.announce(events)

    def newest_archived(self) -> datetime | None:
        """The archive's newest transaction time (what a retrain plans its windows from)."""
        with Archive(self.root, TopicNames.from_settings(self.settings)) as archive:
            return archive.newest_transaction_time()

    def apply_policy(self) -> None:
        """The promotion policy, every `trainer_check_s` while no job runs."""
        if self._policy is None or self.job is not None or time.monotonic() < self._next_check:
            return
        self._next_check = time.monotonic() + self.settings.trainer_check_s
        try:
            with Archive(self.root, TopicNames.from_settings(self.settings)) as archive:
                events = self._policy(self.registry, archive, self._clock())
        except Exception as exc:  # the next check tries again: the service keeps running
            self.metrics.policy_errors.inc()
            _log.error("promotion policy not applied: %s", exc,
                       exc_info=not isinstance(exc, FraudStreamError))  # fmt: skip
            return
        self.announce(events)

    def announce(self, events: list[ModelEvent]) -> None:
        """Send registry events to `fraud.models` (scorers re-read the registry on each)."""
        for event in events:
            self.producer.produce(self.settings.topic_models, encode(event),
                                  key=event.model_name.encode())  # fmt: skip
            self.metrics.model_events.labels(event.event.value).inc()
            _log.info("%s %s %s: %s", event.event.value, event.model_name, event.version,
                      event.note)  # fmt: skip
        if events and self.producer.flush(30) != 0:
            _log.error("%d event(s) not delivered to %s within 30 s", len(self.producer),
                       self.settings.topic_models)  # fmt: skip

    def _already_trained(self, trigger_id: str) -> bool:
        """A version registered for this trigger: named in its registration note (the
        first trigger of a job) or in its evaluation (every trigger coalesced into it)."""
        name = self.settings.model_name
        try:
            events = self.registry.events(name)
        except ModelNotFoundError:
            return False
        for event in events:
            if event.event is not ModelEventType.REGISTERED:
                continue
            if trigger_id in event.note.split():
                return True
            evaluation = self.registry.evaluation(name, event.version)
            if (
                evaluation is not None
                and trigger_id in Evaluation.model_validate_json(evaluation).triggers
            ):
                return True
        return False

    def _commit(self) -> None:
        if not self._uncommitted:
            return
        offsets = [TopicPartition(self.settings.topic_retrain, p, o)
                   for p, o in self._uncommitted.items()]  # fmt: skip
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
            self._uncommitted.clear()
        except Exception as exc:  # a rebalance: the next owner may see these again
            _log.warning("commit of %s failed: %s", offsets, exc)


def _default_job(
    settings: TrainerSettings, archive: Archive, registry: Registry, triggers: list[str]
) -> RetrainResult:
    return retrain(settings, archive, registry, triggers=triggers)


def serve_trainer(settings: TrainerSettings | None = None, policy: Policy | None = None) -> None:
    """Run the trainer until SIGTERM/SIGINT, with `policy` (default: the promotion policy
    of `settings.promotion_config`). A job still running is abandoned uncommitted, so its
    triggers are read again after the restart."""
    stop = stop_on_signals(_log, "stopping (a running job is abandoned and redone on restart)")
    settings = settings or TrainerSettings()
    policy = policy or PromotionPolicy.from_settings(settings)
    endpoints = resolve_endpoints(settings)
    consumer = kafka_clients.consumer(settings, endpoints.kafka_bootstrap,
                                      settings.trainer_group_id)  # fmt: skip
    producer = kafka_clients.producer(settings, endpoints.kafka_bootstrap)
    trainer = Trainer(settings, consumer, producer, policy=policy)
    trainer.health.set_model_loaded(True)
    server = serve(trainer.metrics.registry, trainer.health, host=settings.metrics_host,
                   port=settings.trainer_metrics_port)  # fmt: skip
    _log.info("trainer for %s: triggers from %s, archive %s, registry %s; metrics on "
              "http://%s:%d", settings.model_name, settings.topic_retrain, trainer.root,
              settings.registry_dir, server.host, server.port)  # fmt: skip
    try:
        trainer.run(stop)
    finally:
        consumer.close()
        server.close()


def main() -> None:
    """`python -m fraudstream.retrain.service` (what `fraudctl trainer` runs)."""
    run_service(serve_trainer, _log)


if __name__ == "__main__":
    main()
