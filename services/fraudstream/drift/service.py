"""The drift monitor service: a faust-streaming app on `fraud.decisions` and `fraud.labels`.

Both agents read in batches (`stream.take`) and hand them to one `drift.monitor.Monitor`.
The label join's maps are faust tables (changelogged to Kafka: a restarted monitor still
holds the decisions waiting for their labels); the detectors live in memory and start
again after a restart. Triggers go to `fraud.retrain`, keyed by model name; gauges and
counters on `/metrics` make drift alertable. One worker watches every partition: the
detectors are global (a score distribution is of all traffic) and the core keeps up with
far more than the scorer produces (`load_tests/bench_drift.py`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faust
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import Field, ValidationError

from fraudstream.contracts import Decision, DecisionPath, Label, Verdict, encode
from fraudstream.drift.config import MonitorConfig
from fraudstream.drift.join import APPROVE, DECLINE, REVIEW, LabelJoin, Seen
from fraudstream.drift.monitor import Fed, Monitor, Observed
from fraudstream.localstack.stack import resolve_endpoints
from fraudstream.model.drift_reference import DriftReference
from fraudstream.observability.http import HealthServer, HealthState, serve
from fraudstream.registry import Registry
from fraudstream.settings import CommonSettings

_log = logging.getLogger(__name__)
_ACTIONS = {"approve": APPROVE, "review": REVIEW, "decline": DECLINE}


class DriftSettings(CommonSettings):
    """The monitor's settings (env `FRAUD_DRIFT_*` and the common ones)."""

    drift_config: Path = Field(
        default=Path("config/drift.yaml"), description="Detector settings (MonitorConfig)."
    )
    drift_group_id: str = Field(default="fraud-drift", description="The faust app id.")
    drift_batch: int = Field(default=1_000, ge=1, le=100_000, description="Records per take().")
    drift_metrics_port: int = Field(default=9402, ge=0, le=65535, description="0: a free port.")
    drift_stop_timeout_s: float = Field(
        default=30.0, gt=0, le=600,
        description="After SIGTERM/SIGINT, exit (status 1) if faust has not stopped by then.",
    )  # fmt: skip
    registry_dir: Path = Field(default=Path("models"), description="Model registry root.")
    metrics_host: str = Field(default="127.0.0.1", description="Bind address of /metrics.")


class DriftMetrics:
    """What on-call alerts on: drifted detectors, statistics, triggers, join outcomes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("model_version", "detector", "feature")
        self.drifted = Gauge("fraud_drift_detected", "1 while a detector is drifted", labels,
                             registry=self.registry)  # fmt: skip
        self.statistic = Gauge("fraud_drift_statistic", "A detector's latest statistic",
                               labels, registry=self.registry)  # fmt: skip
        self.threshold = Gauge("fraud_drift_threshold", "The statistic's alarm threshold",
                               labels, registry=self.registry)  # fmt: skip
        self.events = Gauge("fraud_drift_events", "Events a detector has seen", labels,
                            registry=self.registry)  # fmt: skip
        self.last_alarm = Gauge("fraud_drift_last_alarm_timestamp_seconds",
                                "Decision time of a detector's last alarm", labels,
                                registry=self.registry)  # fmt: skip
        self.alarms = Counter("fraud_drift_alarms", "Detectors entering drift",
                              ("detector",), registry=self.registry)  # fmt: skip
        self.triggers = Counter("fraud_retrain_triggers", "Triggers sent to fraud.retrain",
                                registry=self.registry)  # fmt: skip
        self.records = Counter("fraud_drift_records", "Records read, by topic and outcome",
                               ("topic", "outcome"), registry=self.registry)  # fmt: skip
        self.joins = Gauge("fraud_drift_label_joins", "Label join outcomes so far",
                           ("outcome",), registry=self.registry)  # fmt: skip
        self.precision = Gauge("fraud_model_precision", "Fraud share of settled declines",
                               ("model_version",), registry=self.registry)  # fmt: skip

    def update(self, monitor: Monitor, fed: Fed) -> None:
        for alarm in fed.alarms:
            self.alarms.labels(alarm.detector).inc()
        if fed.trigger is not None:
            self.triggers.inc()
        for version, detectors in monitor.detectors.status().items():
            for d in detectors:
                key = (version, d.detector, d.feature or "")
                self.drifted.labels(*key).set(float(d.drifted))
                self.statistic.labels(*key).set(d.value)
                self.threshold.labels(*key).set(d.threshold)
                self.events.labels(*key).set(d.events)
                if d.last_alarm_at is not None:
                    self.last_alarm.labels(*key).set(d.last_alarm_at)
                if d.detector == "precision" and d.events:
                    self.precision.labels(version).set(d.value)
        for outcome, count in vars(monitor.join.counts).items():
            self.joins.labels(outcome).set(count)


def observe(values: Sequence[bytes | None], metrics: DriftMetrics | None = None) -> list[Observed]:
    """The ML decisions among raw `fraud.decisions` values (others are counted, skipped)."""
    out = []
    for value in values:
        try:
            decision = Decision.model_validate_json(value or b"")
        except ValidationError:
            _count(metrics, "decisions", "invalid")
            continue
        if decision.path is not DecisionPath.ML or decision.score is None:
            _count(metrics, "decisions", "not_ml")
            continue
        seen = Seen(decision.transaction_id, decision.decided_at.timestamp(),
                    decision.model_version or "", decision.score,
                    _ACTIONS[decision.action.value])  # fmt: skip
        out.append(Observed(seen, decision.monitored or {}))
        _count(metrics, "decisions", "ml")
    return out


def read_labels(
    values: Sequence[bytes | None], metrics: DriftMetrics | None = None
) -> list[tuple[str, bool, float]]:
    """(transaction id, fraud, labelled_at) of raw `fraud.labels` values."""
    out = []
    for value in values:
        try:
            label = Label.model_validate_json(value or b"")
        except ValidationError:
            _count(metrics, "labels", "invalid")
            continue
        out.append((label.transaction_id, label.verdict is Verdict.FRAUD,
                    label.labelled_at.timestamp()))  # fmt: skip
        _count(metrics, "labels", "ok")
    return out


def _count(metrics: DriftMetrics | None, topic: str, outcome: str) -> None:
    if metrics is not None:
        metrics.records.labels(topic, outcome).inc()


def references(registry: Registry, name: str) -> Any:
    """Model version -> its reference (None for versions without one, or unknown)."""

    def find(version: str) -> DriftReference | None:
        try:
            return DriftReference.read(registry.checked_path(name, version))
        except Exception:
            _log.warning("no drift reference for %s %s", name, version, exc_info=True)
            return None

    return find


def build_app(settings: DriftSettings) -> tuple[faust.App, Monitor, DriftMetrics]:
    """The faust app with its two agents, the monitor and its metrics."""
    endpoints = resolve_endpoints(settings)
    config = MonitorConfig.from_yaml(settings.drift_config)
    # faust makes its data directory even for in-memory tables, by default `<id>-data` in
    # the working directory; keep it with the rest of the local state. faust creates only
    # the last level.
    datadir = settings.state_dir / "drift" / settings.drift_group_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.drift_group_id,
        broker=f"kafka://{endpoints.kafka_bootstrap}",
        store="memory://",
        datadir=datadir,
        web_enabled=False,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        key_serializer="raw",
        value_serializer="raw",
    )
    # JSON keys and values (faust's default for tables), partitioned by key: the join
    # writes outside a stream event's context, in batches.
    tables = {
        name: app.Table(f"{settings.drift_group_id}-{name}", use_partitioner=True)
        for name in ("decisions", "pending")
    }
    join = LabelJoin(config.join, tables["decisions"], tables["pending"])
    monitor = Monitor(config, references(Registry(settings.registry_dir), config.model_name),
                      join)  # fmt: skip
    metrics = DriftMetrics()
    retrain = app.topic(settings.topic_retrain)
    recovered = False

    async def publish(fed: Fed) -> None:
        metrics.update(monitor, fed)
        if fed.trigger is not None:
            trigger = fed.trigger
            _log.warning("retraining trigger %s: %s %s %.4g", trigger.trigger_id,
                         trigger.detector, trigger.feature or "", trigger.value)  # fmt: skip
            await retrain.send(key=fed.trigger.model_name.encode(), value=encode(fed.trigger))

    def ready() -> None:
        nonlocal recovered
        if not recovered:  # the tables are restored before agents run: order them once
            join.rebuild()
            recovered = True

    @app.agent(app.topic(settings.topic_decisions))
    async def decisions(stream: Any) -> None:
        async for batch in stream.take(settings.drift_batch, within=1.0):
            ready()
            await publish(monitor.on_decisions(observe(batch, metrics)))

    @app.agent(app.topic(settings.topic_labels))
    async def labels(stream: Any) -> None:
        async for batch in stream.take(settings.drift_batch, within=1.0):
            ready()
            await publish(monitor.on_labels(read_labels(batch, metrics)))

    return app, monitor, metrics


class _Worker(faust.Worker):
    """faust's worker with a bound on stopping: with its broker gone, faust waits forever
    in "Gathering all futures" (seen: 20 minutes until kill -9), so a stop signal also
    arms a timer that ends the process after `stop_timeout_s`."""

    stop_timeout_s = 30.0

    def _on_sigterm(self) -> None:
        _exit_after(self.stop_timeout_s)
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        _exit_after(self.stop_timeout_s)
        super()._on_sigint()


def _exit_after(timeout_s: float) -> None:
    def hard_exit() -> None:
        _log.error("faust did not stop within %.0f s of the signal (is the broker gone?): "
                   "exiting without it", timeout_s)  # fmt: skip
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(timeout_s, hard_exit)
    timer.daemon = True
    timer.start()


def run(settings: DriftSettings) -> None:
    """Serve `/metrics` and run the faust worker until a signal stops it."""
    app, _monitor, metrics = build_app(settings)
    health = HealthState(liveness_timeout_s=3600.0)
    health.set_model_loaded(True)
    server: HealthServer = serve(metrics.registry, health, host=settings.metrics_host,
                                 port=settings.drift_metrics_port)  # fmt: skip
    _log.info("drift monitor metrics on port %d", server.port)
    try:
        worker = _Worker(app, loglevel="INFO")
        worker.stop_timeout_s = settings.drift_stop_timeout_s
        worker.execute_from_commandline()
    finally:
        server.close()


def main() -> None:
    """`python -m fraudstream.drift.service` (what `fraudctl drift monitor` runs)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run(DriftSettings())


if __name__ == "__main__":
    main()
