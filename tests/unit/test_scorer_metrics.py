"""ScorerMetrics: values after the per-batch helpers, label hygiene, model-info swaps."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from fraudstream.contracts import Action, DeadLetterReason, DecisionPath
from fraudstream.scoring.metrics import (
    LATENCY_BUCKETS_S,
    CircuitState,
    Dependency,
    ModelRef,
    ScorerMetrics,
    Stage,
)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> ScorerMetrics:
    return ScorerMetrics(registry)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_fresh_registry_starts_at_zero_and_twice_is_a_duplicate(
    registry: CollectorRegistry, metrics: ScorerMetrics
) -> None:
    assert value(registry, "fraud_transactions_consumed_total") == 0
    assert value(registry, "fraud_decisions_total", action="decline", path="ml") == 0
    assert value(registry, "fraud_dlq_records_total", reason="invalid_json") == 0
    assert value(registry, "fraud_end_to_end_latency_seconds_count") == 0
    assert value(registry, "fraud_degraded", dependency="redis") == 0
    assert value(registry, "fraud_circuit_state", dependency="model") == 0
    with pytest.raises(ValueError, match="Duplicated"):
        ScorerMetrics(registry)
    ScorerMetrics(CollectorRegistry())  # a fresh registry is independent


def test_observe_batch_counts_records_and_times_stages(
    registry: CollectorRegistry, metrics: ScorerMetrics
) -> None:
    metrics.observe_batch(300, {Stage.CONSUME: 0.002, "model": 0.004})
    metrics.observe_batch(200, {Stage.CONSUME: 0.020})
    assert value(registry, "fraud_transactions_consumed_total") == 500
    assert value(registry, "fraud_batch_size_count") == 2
    assert value(registry, "fraud_batch_size_sum") == 500
    assert value(registry, "fraud_batch_size_bucket", le="250.0") == 1
    assert value(registry, "fraud_stage_latency_seconds_count", stage="consume") == 2
    assert value(registry, "fraud_stage_latency_seconds_sum", stage="consume") == pytest.approx(
        0.022
    )
    assert value(registry, "fraud_stage_latency_seconds_count", stage="model") == 1
    assert value(registry, "fraud_stage_latency_seconds_count", stage="commit") == 0
    with pytest.raises(ValueError, match="unknown stage"):
        metrics.observe_batch(1, {"serialize": 0.1})


def test_count_decisions_and_dlq(registry: CollectorRegistry, metrics: ScorerMetrics) -> None:
    metrics.count_decisions({(Action.DECLINE, DecisionPath.RULES): 3, ("approve", "ml"): 7})
    metrics.count_decisions({("approve", "ml"): 2, ("review", "degraded"): 0})
    metrics.count_dlq(DeadLetterReason.OVERSIZE, 4)
    metrics.count_dlq("duplicate_id")
    assert value(registry, "fraud_decisions_total", action="decline", path="rules") == 3
    assert value(registry, "fraud_decisions_total", action="approve", path="ml") == 9
    assert value(registry, "fraud_decisions_total", action="review", path="degraded") == 0
    assert value(registry, "fraud_dlq_records_total", reason="oversize") == 4
    assert value(registry, "fraud_dlq_records_total", reason="duplicate_id") == 1
    with pytest.raises(ValueError, match="unknown"):
        metrics.count_decisions({("maybe", "ml"): 1})
    with pytest.raises(ValueError, match="unknown reason"):
        metrics.count_dlq("card 4111")


def test_end_to_end_latencies_match_a_reference_histogram(
    registry: CollectorRegistry, metrics: ScorerMetrics
) -> None:
    rng = np.random.default_rng(7)
    # Exact bucket edges, values between them, beyond the last bucket and below zero.
    values = np.concatenate(
        [rng.exponential(0.02, 500), np.asarray(LATENCY_BUCKETS_S), [0.0, 12.0, 1e9]]
    )
    metrics.observe_latencies(values[:300])
    metrics.observe_latencies(values[300:].tolist())
    reference_registry = CollectorRegistry()
    reference = Histogram(
        "ref_seconds", "ref", buckets=LATENCY_BUCKETS_S, registry=reference_registry
    )
    for v in values:
        reference.observe(float(v))
    for le in [*(repr(b) for b in LATENCY_BUCKETS_S), "+Inf"]:
        got = value(registry, "fraud_end_to_end_latency_seconds_bucket", le=le)
        assert got == reference_registry.get_sample_value("ref_seconds_bucket", {"le": le}), le
    assert value(registry, "fraud_end_to_end_latency_seconds_count") == values.size
    assert value(registry, "fraud_end_to_end_latency_seconds_sum") == pytest.approx(values.sum())


def test_latencies_drop_non_finite_and_clamp_clock_skew(
    registry: CollectorRegistry, metrics: ScorerMetrics
) -> None:
    metrics.observe_latencies(np.array([np.nan, np.inf, -0.5, 0.003]))
    metrics.observe_latencies([])
    assert value(registry, "fraud_end_to_end_latency_seconds_count") == 2
    assert value(registry, "fraud_end_to_end_latency_seconds_bucket", le="0.001") == 1
    assert value(registry, "fraud_end_to_end_latency_seconds_sum") == pytest.approx(0.003)


def test_shadow_deltas_are_absolute(registry: CollectorRegistry, metrics: ScorerMetrics) -> None:
    # Deltas 0, 0.25 and 0.03125, exact in binary floating point.
    metrics.observe_shadow_deltas(np.array([0.5, 0.5, 0.5]), np.array([0.5, 0.25, 0.53125]))
    assert value(registry, "fraud_shadow_score_delta_count") == 3
    assert value(registry, "fraud_shadow_score_delta_sum") == 0.28125
    assert value(registry, "fraud_shadow_score_delta_bucket", le="0.001") == 1
    assert value(registry, "fraud_shadow_score_delta_bucket", le="0.05") == 2
    assert value(registry, "fraud_shadow_score_delta_bucket", le="0.2") == 2
    assert value(registry, "fraud_shadow_score_delta_bucket", le="0.3") == 3


def test_gauges_and_counters(registry: CollectorRegistry, metrics: ScorerMetrics) -> None:
    metrics.set_consumer_state(lag_records=1234, assigned_partitions=6)
    metrics.set_degraded(Dependency.REDIS, True)
    metrics.set_circuit_state(Dependency.REDIS, CircuitState.HALF_OPEN)
    metrics.count_kafka_transaction("committed")
    metrics.count_kafka_transaction("committed")
    metrics.count_kafka_transaction("aborted")
    metrics.count_redis_error("update")
    metrics.count_rule_reload_error()
    metrics.mark_progress(1_700_000_000.5)
    metrics.count_state_refused(1)
    metrics.count_state_replayed(250)
    metrics.count_state_replayed(3)
    metrics.set_state_sync(1200, 2)
    assert value(registry, "fraud_state_refused_saves_total") == 1
    assert value(registry, "fraud_state_replayed_offsets_total") == 253
    assert value(registry, "fraud_state_catch_up_remaining_offsets") == 1200
    assert value(registry, "fraud_state_unsynced_partitions") == 2
    assert value(registry, "fraud_consumer_lag_records") == 1234
    assert value(registry, "fraud_assigned_partitions") == 6
    assert value(registry, "fraud_degraded", dependency="redis") == 1
    assert value(registry, "fraud_degraded", dependency="model") == 0
    assert value(registry, "fraud_circuit_state", dependency="redis") == 1
    assert value(registry, "fraud_kafka_transactions_total", outcome="committed") == 2
    assert value(registry, "fraud_kafka_transactions_total", outcome="aborted") == 1
    assert value(registry, "fraud_redis_errors_total", operation="update") == 1
    assert value(registry, "fraud_rule_reload_errors_total") == 1
    assert value(registry, "fraud_last_progress_timestamp_seconds") == 1_700_000_000.5
    metrics.set_degraded(Dependency.REDIS, False)
    assert value(registry, "fraud_degraded", dependency="redis") == 0


EXPECTED_FAMILIES = {
    "fraud_transactions_consumed",
    "fraud_decisions",
    "fraud_dlq_records",
    "fraud_end_to_end_latency_seconds",
    "fraud_stage_latency_seconds",
    "fraud_batch_size",
    "fraud_consumer_lag_records",
    "fraud_assigned_partitions",
    "fraud_degraded",
    "fraud_model_info",
    "fraud_model_swaps",
    "fraud_model_load_errors",
    "fraud_rule_pack_info",
    "fraud_rule_reload_errors",
    "fraud_shadow_score_delta",
    "fraud_kafka_transactions",
    "fraud_redis_errors",
    "fraud_state_refused_saves",
    "fraud_state_replayed_offsets",
    "fraud_state_catch_up_remaining_offsets",
    "fraud_state_unsynced_partitions",
    "fraud_circuit_state",
    "fraud_last_progress_timestamp_seconds",
}
# Bounded, identity-free label names only: no card, customer, merchant or transaction ids.
EXPECTED_LABELS = {
    "action",
    "path",
    "reason",
    "stage",
    "le",
    "dependency",
    "model_name",
    "version",
    "role",
    "outcome",
    "operation",
}


def model_series(registry: CollectorRegistry) -> set[tuple[str, str, str]]:
    return {
        (s.labels["model_name"], s.labels["version"], s.labels["role"])
        for family in registry.collect()
        if family.name == "fraud_model_info"
        for s in family.samples
        if s.value == 1
    }


def test_model_swap_clears_stale_label_sets(
    registry: CollectorRegistry, metrics: ScorerMetrics
) -> None:
    v1, v2 = ModelRef("fraud", "v1"), ModelRef("fraud", "v2")
    metrics.set_model(v1)
    assert model_series(registry) == {("fraud", "v1", "champion")}
    assert value(registry, "fraud_model_swaps_total") == 0  # first load is not a swap
    metrics.set_model(v1, shadow=v2)
    assert model_series(registry) == {("fraud", "v1", "champion"), ("fraud", "v2", "shadow")}
    metrics.set_model(v2)
    assert model_series(registry) == {("fraud", "v2", "champion")}
    stale = value(registry, "fraud_model_info", model_name="fraud", version="v1", role="champion")
    assert stale is None
    assert value(registry, "fraud_model_swaps_total") == 2
    metrics.set_model(v2)  # unchanged: no swap
    assert value(registry, "fraud_model_swaps_total") == 2


def test_model_swap_leaves_no_zero_valued_stale_series(
    registry: CollectorRegistry, metrics: ScorerMetrics
) -> None:
    metrics.set_model(ModelRef("fraud", "v1"), canary=ModelRef("fraud", "v2"))
    metrics.set_model(ModelRef("fraud", "v2"))
    text = generate_latest(registry).decode()
    assert 'version="v1"' not in text
    assert 'role="canary"' not in text


def test_model_load_errors_are_counted(registry: CollectorRegistry, metrics: ScorerMetrics) -> None:
    assert value(registry, "fraud_model_load_errors_total") == 0
    metrics.count_model_load_error()
    metrics.count_model_load_error(2)  # e.g. failures of the initial load, counted at wiring
    metrics.count_model_load_error(0)
    assert value(registry, "fraud_model_load_errors_total") == 3


def test_rule_pack_info_keeps_only_the_loaded_version(
    registry: CollectorRegistry, metrics: ScorerMetrics
) -> None:
    metrics.set_rule_pack("2024-06-01")
    metrics.set_rule_pack("2024-06-01")
    metrics.set_rule_pack("2024-07-01")
    assert value(registry, "fraud_rule_pack_info", version="2024-07-01") == 1
    assert value(registry, "fraud_rule_pack_info", version="2024-06-01") is None


def test_no_identity_labels_and_units_in_names(
    registry: CollectorRegistry, metrics: ScorerMetrics
) -> None:
    metrics.set_model(ModelRef("fraud", "v1"))
    metrics.set_rule_pack("p1")
    metrics.count_redis_error("read")
    families = list(registry.collect())
    assert {f.name for f in families} == EXPECTED_FAMILIES
    labels = {label for f in families for s in f.samples for label in s.labels}
    assert labels == EXPECTED_LABELS
    for family in families:
        if family.type == "counter":
            assert family.samples[0].name.endswith("_total"), family.name
        if family.type == "histogram" and "latency" in family.name:
            assert family.name.endswith("_seconds"), family.name
