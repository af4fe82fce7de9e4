"""Prometheus metrics of the scorer, built once from a registry passed in.

Labels are bounded enums (action, path, stage, dependency, reason, role), never card, customer
or transaction ids. Labelled children are created up front and cached, so the per-batch
helpers do no label lookups; per-record latencies go through a numpy-bucketed histogram.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from itertools import product
from typing import Literal, TypeVar

import numpy as np
from numpy.typing import ArrayLike
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from fraudstream.contracts import Action, DeadLetterReason, DecisionPath

_K = TypeVar("_K")
_V = TypeVar("_V")

# 1 ms to 10 s, dense around the 50 ms p99 target so the quantile estimate is tight there.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04,
                     0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # fmt: skip
BATCH_SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
SCORE_DELTA_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


class Stage(StrEnum):
    """Stages of one scorer batch, timed separately."""

    CONSUME = "consume"
    VALIDATE = "validate"
    STATE = "state"  # Redis read of entity parts and checkpoints
    RULES = "rules"
    FEATURES = "features"
    MODEL = "model"
    DECIDE = "decide"
    SAVE = "save"  # Redis write of entity parts and checkpoints (after the commit)
    PRODUCE = "produce"
    COMMIT = "commit"


class Dependency(StrEnum):
    """Dependencies the scorer degrades around."""

    REDIS = "redis"
    MODEL = "model"


class CircuitState(IntEnum):
    """Circuit-breaker state as exported by `fraud_circuit_state`."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A loaded model version, as shown in `fraud_model_info`."""

    name: str
    version: str


class ArrayHistogram(Collector):
    """A histogram fed whole numpy arrays: one searchsorted + bincount per batch, not per value."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self._name, self._doc = name, documentation
        self._bounds = np.asarray(buckets, dtype=np.float64)
        self._les = [*(repr(float(b)) for b in buckets), "+Inf"]  # as Histogram labels `le`
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: ArrayLike) -> None:
        """Observe every finite value; NaN and infinities are dropped, negatives count as 0."""
        arr = np.asarray(values, dtype=np.float64).ravel()
        arr = np.maximum(arr[np.isfinite(arr)], 0.0)
        if arr.size == 0:
            return
        # side="left": index of the first bound >= value, i.e. Prometheus' inclusive `le`.
        counts = np.bincount(np.searchsorted(self._bounds, arr), minlength=self._counts.size)
        total = float(arr.sum())
        with self._lock:
            self._counts += counts
            self._sum += total

    def describe(self) -> Iterable[Metric]:
        """Announce the name to the registry (duplicate detection) without values."""
        return [HistogramMetricFamily(self._name, self._doc)]

    def collect(self) -> Iterable[Metric]:
        """Emit cumulative buckets, the count and the sum."""
        with self._lock:
            cumulative, total = np.cumsum(self._counts).tolist(), self._sum
        buckets = list(zip(self._les, cumulative, strict=True))
        return [HistogramMetricFamily(self._name, self._doc, buckets=buckets, sum_value=total)]


class ScorerMetrics:
    """Every scorer metric, registered on `registry`, with cheap per-batch helpers."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def gauge(name: str, doc: str, *labels: str) -> Gauge:
            return Gauge(name, doc, labels, registry=registry)

        def array_histogram(name: str, doc: str, buckets: Sequence[float]) -> ArrayHistogram:
            histogram = ArrayHistogram(name, doc, buckets)
            registry.register(histogram)
            return histogram

        self.consumed = counter("fraud_transactions_consumed_total", "Input records consumed.")
        self.decisions = counter("fraud_decisions_total", "Decisions.", "action", "path")
        self._decisions = {
            k: self.decisions.labels(*k) for k in product(map(str, Action), map(str, DecisionPath))
        }
        self.dlq = counter("fraud_dlq_records_total", "Records dead-lettered.", "reason")
        self._dlq = {str(x): self.dlq.labels(str(x)) for x in DeadLetterReason}
        self.end_to_end = array_histogram(
            "fraud_end_to_end_latency_seconds",
            "From the input record's Kafka timestamp to its decision being produced.",
            LATENCY_BUCKETS_S,
        )
        self.stage = Histogram(
            "fraud_stage_latency_seconds",
            "Wall time of one batch stage.",
            ["stage"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self._stages = {str(s): self.stage.labels(str(s)) for s in Stage}
        self.batch_size = Histogram(
            "fraud_batch_size", "Records per batch.", buckets=BATCH_SIZE_BUCKETS, registry=registry
        )
        self.lag = gauge("fraud_consumer_lag_records", "Lag summed over assigned partitions.")
        self.assigned = gauge("fraud_assigned_partitions", "Partitions currently assigned.")
        self.degraded = gauge("fraud_degraded", "1 while degraded around it.", "dependency")
        self.circuit = gauge("fraud_circuit_state", "0 closed, 1 half-open, 2 open.", "dependency")
        for dep in Dependency:
            self.degraded.labels(str(dep)).set(0)
            self.circuit.labels(str(dep)).set(CircuitState.CLOSED)
        self.model_info = gauge(
            "fraud_model_info", "1 per loaded model.", "model_name", "version", "role"
        )
        self.model_swaps = counter("fraud_model_swaps_total", "Changes of the loaded model set.")
        self.model_load_errors = counter(
            "fraud_model_load_errors_total",
            "Failed registry reads and model loads; the last good set (or no model) serves.",
        )
        self.rule_pack_info = gauge(
            "fraud_rule_pack_info", "1 for the loaded rule pack.", "version"
        )
        self.rule_reload_errors = counter("fraud_rule_reload_errors_total", "Failed rule reloads.")
        self.shadow_delta = array_histogram(
            "fraud_shadow_score_delta", "|shadow - champion| score per record.", SCORE_DELTA_BUCKETS
        )
        self.kafka_transactions = counter(
            "fraud_kafka_transactions_total", "Kafka transactions by outcome.", "outcome"
        )
        self._kafka_tx = {o: self.kafka_transactions.labels(o) for o in ("committed", "aborted")}
        self.redis_errors = counter("fraud_redis_errors_total", "Redis errors.", "operation")
        self.state_refused = counter(
            "fraud_state_refused_saves_total",
            "Partition saves refused or failed (Redis moved on or was away); replayed later.",
        )
        self.state_replayed = counter(
            "fraud_state_replayed_offsets_total",
            "Input offsets folded into Redis by catch-up replays of the log.",
        )
        self.state_behind = gauge(
            "fraud_state_catch_up_remaining_offsets",
            "Input offsets background catch-ups (rebuilds) still have to fold.",
        )
        self.state_unsynced = gauge(
            "fraud_state_unsynced_partitions",
            "Assigned partitions scored degraded until their Redis state is caught up.",
        )
        self.last_progress = gauge(
            "fraud_last_progress_timestamp_seconds", "Unix time the loop last made progress."
        )
        self._models: dict[str, ModelRef] = {}
        self._rule_pack: str | None = None

    def observe_batch(self, size: int, stage_seconds: Mapping[str, float]) -> None:
        """Record one batch: its size, consumed count and per-stage durations."""
        self.consumed.inc(size)
        self.batch_size.observe(size)
        for stage, seconds in stage_seconds.items():
            _get(self._stages, str(stage), "stage").observe(seconds)

    def count_decisions(self, counter: Mapping[tuple[str, str], int]) -> None:
        """Add decision counts keyed by (action, path)."""
        for (action, path), n in counter.items():
            if n:
                _get(self._decisions, (str(action), str(path)), "(action, path)").inc(n)

    def count_dlq(self, reason: str, n: int = 1) -> None:
        """Add `n` dead-lettered records with `reason` (a DeadLetterReason value)."""
        if n:
            _get(self._dlq, str(reason), "reason").inc(n)

    def observe_latencies(self, seconds: ArrayLike) -> None:
        """Observe the end-to-end latency of every decision in a batch."""
        self.end_to_end.observe_many(seconds)

    def observe_shadow_deltas(self, champion: ArrayLike, shadow: ArrayLike) -> None:
        """Observe |shadow - champion| for a batch scored by both."""
        self.shadow_delta.observe_many(np.abs(np.subtract(shadow, champion, dtype=np.float64)))

    def set_consumer_state(self, lag_records: int, assigned_partitions: int) -> None:
        """Set total lag and the number of assigned partitions."""
        self.lag.set(lag_records)
        self.assigned.set(assigned_partitions)

    def set_degraded(self, dependency: Dependency, degraded: bool) -> None:
        """Flag (or clear) degraded mode around `dependency`."""
        self.degraded.labels(str(dependency)).set(int(degraded))

    def set_circuit_state(self, dependency: Dependency, state: CircuitState) -> None:
        """Export a circuit breaker's state."""
        self.circuit.labels(str(dependency)).set(int(state))

    def set_model(
        self,
        champion: ModelRef | None,
        shadow: ModelRef | None = None,
        canary: ModelRef | None = None,
    ) -> None:
        """Replace the loaded model set; drops stale label sets and counts a swap on change."""
        new = {
            k: v for k, v in (("champion", champion), ("shadow", shadow), ("canary", canary)) if v
        }
        if new == self._models:
            return
        for role, ref in self._models.items():
            self.model_info.remove(ref.name, ref.version, role)
        for role, ref in new.items():
            self.model_info.labels(ref.name, ref.version, role).set(1)
        if self._models:
            self.model_swaps.inc()
        self._models = new

    def count_model_load_error(self, n: int = 1) -> None:
        """Count failed registry reads or model version loads (ModelWatcher.on_error)."""
        if n:
            self.model_load_errors.inc(n)

    def set_rule_pack(self, version: str) -> None:
        """Show `version` as the loaded rule pack, dropping the previous one."""
        if self._rule_pack is not None and self._rule_pack != version:
            self.rule_pack_info.remove(self._rule_pack)
        self.rule_pack_info.labels(version).set(1)
        self._rule_pack = version

    def count_rule_reload_error(self) -> None:
        """Count a failed rule pack reload (the previous pack stays loaded)."""
        self.rule_reload_errors.inc()

    def count_kafka_transaction(self, outcome: Literal["committed", "aborted"]) -> None:
        """Count a finished Kafka transaction."""
        self._kafka_tx[outcome].inc()

    def count_redis_error(self, operation: str) -> None:
        """Count a Redis error; `operation` must come from a small fixed set (read, update...)."""
        self.redis_errors.labels(operation).inc()

    def count_state_refused(self, partitions: int) -> None:
        """Count partition saves that Redis refused or that failed (replayed later)."""
        self.state_refused.inc(partitions)

    def count_state_replayed(self, offsets: int) -> None:
        """Count input offsets folded into Redis by a catch-up replay."""
        self.state_replayed.inc(offsets)

    def set_state_sync(self, remaining_offsets: int, unsynced_partitions: int) -> None:
        """How far background catch-ups are from done, and how many partitions wait."""
        self.state_behind.set(remaining_offsets)
        self.state_unsynced.set(unsynced_partitions)

    def mark_progress(self, unix_seconds: float) -> None:
        """Record that the loop made progress at `unix_seconds` (wall clock)."""
        self.last_progress.set(unix_seconds)


def _get(children: Mapping[_K, _V], key: _K, what: str) -> _V:
    """Look up a pre-created child; unknown label values are a bug, not a new series."""
    try:
        return children[key]
    except KeyError:
        known = sorted(map(str, children))
        raise ValueError(f"unknown {what} label {key!r}; expected one of {known}") from None
