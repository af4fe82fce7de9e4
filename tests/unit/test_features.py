"""Feature maths: exact values, label timing (no leakage), state round trips, batching."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fraudstream.contracts import Label, Transaction
from fraudstream.errors import ConfigurationError
from fraudstream.features.compute import Event, haversine_km
from fraudstream.features.pipeline import FeaturePipeline, StateCache, replay, state_keys
from fraudstream.features.spec import FeatureConfig, FeatureSpec, catalog
from fraudstream.features.state import LAYOUTS, Entity, decode_state, encode_state
from tests.factories import NOW, transaction

REPO = Path(__file__).resolve().parents[2]
SPEC = FeatureConfig(producer_features={"producer_risk": -1.0}).resolve()
PIPELINE = FeaturePipeline(SPEC)


def _features(txs: list[Transaction], labels: list[Label] | None = None) -> list[dict[str, float]]:
    matrix = replay(PIPELINE, txs, labels or [])
    return [dict(zip(SPEC.names, row.tolist(), strict=True)) for row in matrix]


def _at(minutes: float, **overrides: object) -> Transaction:
    fields: dict[str, object] = {"transaction_id": f"tx-{minutes}"}
    fields.update(overrides)
    return transaction(event_time=NOW + timedelta(minutes=minutes), **fields)


def test_first_payment_of_a_card_has_no_history() -> None:
    (row,) = _features([_at(0)])
    assert row["card_count_1h"] == 1.0
    assert row["card_sum_1h"] == pytest.approx(42.5)
    assert row["card_amount_ratio_30d"] == 1.0
    assert row["card_log_seconds_since_last"] == pytest.approx(math.log1p(30 * 86400))
    assert math.isnan(row["card_distance_km"])
    assert row["card_new_merchant"] == row["card_new_device"] == 1.0


def test_velocity_decays_with_the_window_and_counts_the_current_payment() -> None:
    rows = _features([_at(0), _at(30, amount=100.0)])
    second = rows[1]
    assert second["card_count_1h"] == pytest.approx(1 + math.exp(-0.5))
    assert second["card_sum_1h"] == pytest.approx(42.5 * math.exp(-0.5) + 100.0)
    assert second["card_count_10m"] == pytest.approx(1 + math.exp(-3.0))
    assert second["card_log_seconds_since_last"] == pytest.approx(math.log1p(1800))
    assert second["card_amount_ratio_30d"] == pytest.approx(100.0 / 42.5)
    assert second["card_new_merchant"] == second["card_new_device"] == 0.0


def test_travel_distance_and_speed_between_located_payments() -> None:
    berlin, paris = (52.52, 13.405), (48.8566, 2.3522)
    rows = _features([
        _at(0, latitude=berlin[0], longitude=berlin[1]),
        _at(60, latitude=paris[0], longitude=paris[1], merchant_id="merch-paris"),
    ])  # fmt: skip
    distance = haversine_km(*berlin, *paris)
    assert 870 < distance < 890
    assert rows[1]["card_distance_km"] == pytest.approx(distance)
    assert rows[1]["card_speed_kmh"] == pytest.approx(distance)  # one hour apart
    assert rows[1]["card_distinct_merchants_24h"] == 2.0


def test_a_new_device_and_country_are_flagged_once() -> None:
    rows = _features([
        _at(0),
        _at(5, device_id="dev-new", country="RO"),
        _at(10, device_id="dev-new", country="RO"),
    ])  # fmt: skip
    assert [r["card_new_device"] for r in rows] == [1.0, 1.0, 0.0]
    assert [r["card_new_country"] for r in rows] == [1.0, 1.0, 0.0]
    assert rows[2]["card_distinct_devices_7d"] == 2.0
    assert rows[2]["device_distinct_cards_24h"] == 1.0


def test_shared_device_counts_distinct_cards() -> None:
    rows = _features([_at(i, card_token=f"card-{i}") for i in range(6)])
    assert [r["device_distinct_cards_24h"] for r in rows] == [1, 2, 3, 4, 4, 4]  # 4 slots
    assert rows[-1]["device_count_1h"] == pytest.approx(sum(math.exp(-i / 60) for i in range(6)))


def test_state_older_than_the_ttl_is_forgotten() -> None:
    ttl_days = LAYOUTS[Entity.CARD].ttl_s / 86400
    rows = _features([_at(0), _at(ttl_days * 24 * 60 + 1)])
    assert rows[1]["card_count_30d"] == 1.0
    assert rows[1]["card_new_merchant"] == 1.0


def test_producer_features_use_their_default_when_absent() -> None:
    rows = _features([_at(0), _at(1, features=None)])
    assert rows[0]["producer_producer_risk"] == pytest.approx(0.25)
    assert rows[1]["producer_producer_risk"] == -1.0


def test_events_without_device_or_ip_leave_those_features_missing() -> None:
    (row,) = _features([_at(0, device_id=None, ip=None)])
    assert math.isnan(row["device_count_1h"])
    assert math.isnan(row["ip_distinct_cards_24h"])


def test_config_file_resolves_and_unknown_names_are_refused() -> None:
    spec = FeatureConfig.from_yaml(REPO / "config" / "features.yaml").resolve()
    assert spec.names[: len(catalog())] == catalog()
    assert spec.names[-1] == "producer_auth_3ds"
    with pytest.raises(ValidationError, match="unknown features"):
        FeatureConfig(include=("card_count_1h", "no_such_feature"))
    narrow = FeatureConfig(include=("amount_log", "card_count_1h")).resolve()
    matrix = FeaturePipeline(narrow).transform([Event.from_transaction(_at(0))], StateCache())
    assert matrix.shape == (1, 2)


def test_a_producer_feature_the_contract_would_refuse_is_refused_with_the_fix(
    tmp_path: Path,
) -> None:
    path = tmp_path / "features.yaml"
    path.write_text("producer_features:\n  auth_3ds: 0\n  Device-Score: null\n")
    with pytest.raises(ConfigurationError, match=r"features.yaml.*\['Device-Score'\].*rename"):
        FeatureConfig.from_yaml(path)


def test_state_bytes_round_trip_exactly_and_foreign_data_is_ignored() -> None:
    state = LAYOUTS[Entity.CARD].empty()
    state[1:4] = [1 / 3, math.pi, 1e-300]
    decoded = decode_state(Entity.CARD, encode_state(state))
    assert np.array_equal(np.array(decoded), np.array(state), equal_nan=True)
    empty = np.array(LAYOUTS[Entity.CARD].empty())
    for foreign in (b"garbage", None, encode_state([1.0, 2.0])):
        assert np.array_equal(np.array(decode_state(Entity.CARD, foreign)), empty, equal_nan=True)


@st.composite
def streams(draw: st.DrawFn) -> list[Transaction]:
    n = draw(st.integers(1, 40))
    gaps = draw(st.lists(st.floats(0, 3 * 86400), min_size=n, max_size=n))
    cards = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    amounts = draw(st.lists(st.floats(0.01, 5000), min_size=n, max_size=n))
    devices = draw(st.lists(st.sampled_from([None, "d1", "d2"]), min_size=n, max_size=n))
    t, out = NOW, []
    for i in range(n):
        t += timedelta(seconds=gaps[i])
        out.append(transaction(
            transaction_id=f"tx-{i}", event_time=t, card_token=f"card-{cards[i]}",
            amount=amounts[i], device_id=devices[i], merchant_id=f"m-{i % 3}",
        ))  # fmt: skip
    return out


def _bits(matrix: np.ndarray) -> np.ndarray:
    return matrix.view(np.uint32)


@settings(max_examples=60, deadline=None)
@given(streams(), st.integers(1, 7))
def test_batching_and_state_serialisation_do_not_change_features(
    txs: list[Transaction], batch: int
) -> None:
    whole = replay(PIPELINE, txs)
    stored: dict[tuple[Entity, str], bytes] = {}  # what Redis would hold
    parts = []
    for start in range(0, len(txs), batch):
        events = [Event.from_transaction(tx) for tx in txs[start : start + batch]]
        states = StateCache()
        for key in {k for ev in events for k in state_keys(ev)}:
            states[key] = decode_state(key[0], stored.get(key))
        parts.append(PIPELINE.transform(events, states))
        stored.update({key: encode_state(state) for key, state in states.items()})
    assert np.array_equal(_bits(whole), _bits(np.vstack(parts)))


def test_spec_is_serialisable_for_the_registry() -> None:
    doc = SPEC.model_dump(mode="json")
    assert FeatureSpec.model_validate(doc) == SPEC
    assert doc["dtype"] == "float32"
