"""Delay-aligned label risk (`features.labels`): exact values, rise and fall around a
compromise (synthetic, and the simulator's compromised terminal), no label known after
the payment or inside the delay can leak, and the daily counts of partition parts combine
to the single state's."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudstream.contracts import Label, LabelSource, Transaction, Verdict
from fraudstream.features import compute
from fraudstream.features.labels import RISK_WINDOWS_DAYS, LabelBook
from fraudstream.features.pipeline import FeaturePipeline, replay, replay_events
from fraudstream.features.spec import FeatureConfig
from fraudstream.features.state import DAY, LAYOUTS, RING_DAYS, Entity, combine
from fraudstream.simulator import Scenario, SimulationConfig
from fraudstream.trainer import simulated_history
from tests.factories import NOW, transaction

DELAY = 7
SPEC = FeatureConfig(label_delay_days=DELAY).resolve()
PIPELINE = FeaturePipeline(SPEC)
MERCHANT = LAYOUTS[Entity.MERCHANT]
START = NOW.replace(hour=0)  # midnight: day arithmetic below is whole days


def _pay(day: float, i: int, **overrides: object) -> Transaction:
    fields: dict[str, object] = {
        "transaction_id": f"tx-{day}-{i}", "card_token": f"card-{i % 50:04d}",
        "event_time": START + timedelta(days=day), "device_id": None, "ip": None,
    }  # fmt: skip
    fields.update(overrides)
    return transaction(**fields)


def _fraud(tx: Transaction, labelled_at_day: float) -> Label:
    return Label(
        transaction_id=tx.transaction_id, verdict=Verdict.FRAUD, source=LabelSource.CHARGEBACK,
        labelled_at=START + timedelta(days=labelled_at_day), merchant_id=tx.merchant_id,
        event_time=tx.event_time, device_id=tx.device_id, ip=tx.ip,
    )  # fmt: skip


def _risk(txs: list[Transaction], labels: list[Label], name: str) -> list[float]:
    matrix = replay(PIPELINE, txs, labels)
    return [float(v) for v in matrix[:, PIPELINE.columns[name]]]


def test_a_fraud_counts_in_each_window_delay_days_after_its_day() -> None:
    # Day 0: four payments, one fraud (labelled on day 3); then one payment a day (noon).
    day0 = [_pay(0.1 * i, i) for i in range(4)]
    later = [_pay(d + 0.5, 100 + d) for d in range(1, 40)]
    txs = day0 + later
    labels = [_fraud(day0[0], 3)]
    risk_1d = _risk(txs, labels, "merchant_label_risk_1d")
    risk_7d = _risk(txs, labels, "merchant_label_risk_7d")
    risk_30d = _risk(txs, labels, "merchant_label_risk_30d")
    count_30d = _risk(txs, labels, "merchant_delayed_count_30d")
    on_day = {d: 3 + d for d in range(1, 40)}  # row of the payment on day d
    assert risk_1d[on_day[DELAY]] == 0.0  # day 7 looks at day -1 and before
    assert risk_1d[on_day[DELAY + 1]] == 0.25  # day 8's 1-day window is day 0: 1 of 4
    assert risk_1d[on_day[DELAY + 2]] == 0.0
    assert risk_7d[on_day[DELAY + 2]] == pytest.approx(1 / 5)  # days 0-1: 1 of 4 + 1
    assert risk_7d[on_day[DELAY + 7]] == pytest.approx(1 / 10)  # days 0-6
    assert risk_7d[on_day[DELAY + 8]] == 0.0  # day 0 left the 7-day window
    assert risk_30d[on_day[DELAY + 30]] == pytest.approx(1 / 33)  # days 0-29: 4 + 29
    assert count_30d[on_day[DELAY + 30]] == 33.0
    assert risk_30d[on_day[DELAY + 31]] == 0.0  # the fraud is 31 days behind the window


def test_a_label_counts_only_from_when_it_is_known() -> None:
    day0 = [_pay(0.5, 0)]
    later = [_pay(d + 0.5, 100 + d) for d in range(1, 20)]
    labels = [_fraud(day0[0], 12.0)]  # labelled on day 12, after the 7-day delay
    risk_30d = _risk(day0 + later, labels, "merchant_label_risk_30d")
    assert all(v == 0.0 for v in risk_30d[:12])  # days 0-11: not known yet
    assert all(v > 0.0 for v in risk_30d[12:])


def test_device_and_ip_risk_learn_from_labels_that_name_them() -> None:
    txs = [_pay(d + 0.5, d, device_id="dev-shared", ip="198.51.100.7") for d in range(12)]
    labels = [_fraud(txs[0], 1)]
    assert _risk(txs, labels, "device_label_risk_1d")[DELAY + 1] == 1.0
    assert _risk(txs, labels, "ip_label_risk_1d")[DELAY + 1] == 1.0
    unnamed = [labels[0].model_copy(update={"device_id": None, "ip": None})]
    assert _risk(txs, unnamed, "device_label_risk_1d")[DELAY + 1] == 0.0
    assert _risk(txs, unnamed, "merchant_label_risk_1d")[DELAY + 1] == 1.0


def test_a_compromised_merchants_risk_rises_then_falls_back_after_the_window() -> None:
    """A seeded terminal compromise: for five days half of a shop's payments are fraud,
    each labelled 1-6 days later. The 7-day risk rises once the delay has passed and is
    back to zero `delay + w` days after the compromise ended."""
    rng = np.random.default_rng(11)
    compromise = (20, 25)
    txs, labels, i = [], [], 0
    for day in range(70):
        for t in np.sort(rng.uniform(0, 1, 20)):
            tx = _pay(day + float(t), i)
            i += 1
            txs.append(tx)
            if compromise[0] <= day < compromise[1] and rng.random() < 0.5:
                labels.append(_fraud(tx, day + float(t) + float(rng.uniform(1, 6))))
    risk_7d = np.array(_risk(txs, labels, "merchant_label_risk_7d"))
    days = np.array([(tx.event_time - START) / timedelta(days=1) for tx in txs])
    before = days < compromise[0] + DELAY
    rising = (days >= compromise[0] + DELAY + 3) & (days < compromise[1] + DELAY + 3)
    after = days >= compromise[1] + DELAY + 7
    assert (risk_7d[before] == 0.0).all()
    assert risk_7d[rising].min() > 0.1  # 3-5 of the 7 days had half their payments fraud
    assert (risk_7d[after] == 0.0).all()


_entries = st.lists(
    st.tuples(st.floats(0, 60 * DAY), st.floats(0, 120 * DAY), st.integers(0, 10**6)),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(_entries, st.floats(0, 90 * DAY), st.integers(0, 10), st.integers(0, 30))
def test_no_label_known_later_or_inside_the_delay_changes_the_risk(
    entries: list[tuple[float, float, int]], ts: float, delay: int, payments_per_day: int
) -> None:
    """Labels given after the payment, or of payments in the last `delay` days, can be
    changed or removed without changing the payment's label risk."""
    state = MERCHANT.empty()
    for day in range(0, math.floor(ts / DAY) + 1):
        for _ in range(payments_per_day):
            compute.count_day(state, MERCHANT, day * DAY + 1.0)
    book = LabelBook()
    for paid, at, txid in entries:
        book.add(paid, max(at, paid), float(txid))
    end_day = math.floor(ts / DAY) - delay
    visible = LabelBook([e for e in book.entries if e[1] <= ts and e[0] < end_day * DAY])
    got = compute.label_risk(state, MERCHANT, ts, book, delay)
    assert got == compute.label_risk(state, MERCHANT, ts, visible, delay)
    leaked = LabelBook([*visible.entries, (end_day * DAY, ts, -1.0), (0.0, ts + 1.0, -2.0)])
    leaked.entries.sort()
    assert got == compute.label_risk(state, MERCHANT, ts, leaked, delay)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 80 * DAY), st.integers(0, 2)), max_size=60))
def test_daily_counts_of_partition_parts_combine_to_the_single_states(
    payments: list[tuple[float, int]],
) -> None:
    single = MERCHANT.empty()
    parts = [MERCHANT.empty() for _ in range(3)]
    for ts, partition in payments:
        for state in (single, parts[partition]):
            compute.count_day(state, MERCHANT, ts)
    newest = max((ts for ts, _ in payments), default=0.0)
    for state in (single, *parts):  # bring every part to the same clock, as the reader does
        state[0] = newest if not math.isnan(state[MERCHANT.ring_at]) else state[0]
    merged = combine(MERCHANT, parts)
    end_day = math.floor(newest / DAY) + 1
    assert compute.day_counts(merged, MERCHANT, end_day) == compute.day_counts(
        single, MERCHANT, end_day
    )


def test_the_ring_forgets_days_it_has_moved_past_and_ignores_older_payments() -> None:
    state = MERCHANT.empty()
    compute.count_day(state, MERCHANT, 0.5 * DAY)
    compute.count_day(state, MERCHANT, (RING_DAYS + 2.5) * DAY)  # day 0 is out of the ring
    compute.count_day(state, MERCHANT, 0.7 * DAY)  # too old to count
    widest = max(RISK_WINDOWS_DAYS)
    assert compute.day_counts(state, MERCHANT, RING_DAYS + 3) == [1.0] * len(RISK_WINDOWS_DAYS)
    assert compute.day_counts(state, MERCHANT, widest) == [0.0] * len(RISK_WINDOWS_DAYS)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 100 * DAY), max_size=80), st.integers(-5, 110))
def test_window_counts_equal_a_count_of_the_payments_themselves(
    times: list[float], end_day: int
) -> None:
    state = MERCHANT.empty()
    for ts in sorted(times):
        compute.count_day(state, MERCHANT, ts)
    days = [math.floor(ts / DAY) for ts in times]
    newest = max(days, default=0)
    expected = [
        float(sum(end_day - w <= d < end_day and d > newest - RING_DAYS for d in days))
        for w in RISK_WINDOWS_DAYS
    ]
    assert compute.day_counts(state, MERCHANT, end_day) == expected


def test_a_simulated_compromised_terminals_risk_rises_then_falls_back() -> None:
    """The simulator's compromised terminal (fraud on the merchant itself, labelled as the
    simulator's late label stream says): its 7-day risk is 0 until the first fraud day is
    `delay + 1` days old, rises while the fraud days are in the window, and is 0 again
    once the last one is `delay + 7` days behind."""
    config = SimulationConfig(seed=5, n_transactions=40_000, days=60, n_merchants=300,
                              fraud_rate=0.005)  # fmt: skip
    history = simulated_history(config.only(Scenario.COMPROMISED_TERMINAL))
    risk = replay_events(PIPELINE, history.events(), history.labels, rows=len(history))
    column = risk[:, PIPELINE.columns["merchant_label_risk_7d"]]
    day = history.event_micros() // int(DAY * 1_000_000)
    merchants = np.array(history.table["merchant_id"].to_pylist())
    checked = 0
    for terminal in np.unique(merchants[history.y == 1]):
        fraud_days = day[(merchants == terminal) & (history.y == 1)]
        first, last = int(fraud_days.min()), int(fraud_days.max())
        at = merchants == terminal
        if day[at].max() < last + DELAY + 8:
            continue  # the simulation ends before the risk must be back to zero
        assert (column[at & (day < first + DELAY + 1)] == 0).all()
        assert column[at & (day >= first + DELAY + 1) & (day < last + DELAY + 8)].max() > 0.05
        assert (column[at & (day >= last + DELAY + 8)] == 0).all()
        checked += 1
    assert checked >= 2
