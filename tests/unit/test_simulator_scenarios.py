"""The batch simulator: seeded, realistic fraud mix, late labels, drift and valid outputs."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from fraudstream import simulator
from fraudstream.contracts import Label, Transaction, encode
from fraudstream.simulator import (
    TRUTH_COLUMNS,
    DriftConfig,
    Scenario,
    Simulation,
    SimulationConfig,
    SimulatorError,
    iter_transactions,
    live_transactions,
    simulate,
    write,
)

START = datetime(2026, 3, 2, tzinfo=UTC)
SMALL = SimulationConfig(
    seed=11, start=START, days=14, n_transactions=20_000, n_cards=2_000, n_merchants=300,
    fraud_rate=0.01,
)  # fmt: skip


@pytest.fixture(scope="module")
def small() -> Simulation:
    """The small simulation, shared by the tests that only read it."""
    return simulate(SMALL)


@pytest.fixture(scope="module")
def frame(small: Simulation) -> pd.DataFrame:
    """The small simulation's transactions as a data frame."""
    return small.transactions.to_pandas()


def _scenario(frame: pd.DataFrame, scenario: Scenario) -> pd.DataFrame:
    return frame[frame.scenario == scenario.value]


def _earlier_rows(frame: pd.DataFrame, card: str, before: pd.Timestamp) -> pd.DataFrame:
    rows = frame[frame.card_token == card]
    return rows[rows.event_time < before]


def test_same_seed_same_tables_different_seed_different_tables() -> None:
    config = SMALL.model_copy(update={"n_transactions": 3_000})
    first, again = simulate(config), simulate(config)
    assert first.transactions.equals(again.transactions)
    assert first.labels.equals(again.labels)
    other = simulate(config.model_copy(update={"seed": 12}))
    assert not first.transactions.equals(other.transactions)


def test_columns_order_ids_and_tokens(frame: pd.DataFrame) -> None:
    contract = [name for name in Transaction.model_fields if name != "features"]
    assert list(frame.columns) == [*contract, "features.auth_3ds", *TRUTH_COLUMNS]
    assert len(frame) == SMALL.n_transactions
    assert frame.event_time.is_monotonic_increasing
    assert frame.transaction_id.is_unique
    assert frame.transaction_id.str.fullmatch(r"sim-11-\d{12}").all()
    assert frame.card_token.str.fullmatch(r"card-\d{8}").all()
    assert (frame.card_present == frame.latitude.notna()).all()
    assert (frame.is_fraud == (frame.scenario != "")).all()


def test_default_fraud_rate_is_realistic_and_split_by_weight() -> None:
    config = SMALL.model_copy(update={"fraud_rate": SimulationConfig().fraud_rate})
    table = simulate(config).transactions.to_pandas()
    assert 0.003 <= table.is_fraud.mean() <= 0.005
    counts = table.scenario[table.is_fraud].value_counts().to_dict()
    assert counts == {s.value: n for s, n in config.fraud_counts(len(table)).items()}
    for bad in (0.0005, 0.02):
        with pytest.raises(ValidationError):
            SimulationConfig(fraud_rate=bad)


@pytest.mark.parametrize("scenario", list(Scenario))
def test_each_scenario_present_only_when_enabled(scenario: Scenario) -> None:
    config = SMALL.model_copy(update={"n_transactions": 5_000}).only(scenario)
    table = simulate(config).transactions.to_pandas()
    assert set(table.scenario) == {"", scenario.value}
    assert table.is_fraud.sum() == round(config.fraud_rate * config.n_transactions)


def test_no_scenario_means_no_fraud_and_no_fraud_labels() -> None:
    sim = simulate(SMALL.model_copy(update={"n_transactions": 5_000}).only())
    assert not sim.transactions["is_fraud"].to_numpy().any()
    assert set(sim.labels["source"].to_pylist()) <= {"reviewer"}


def test_card_testing_probes_tiny_amounts_then_goes_big(frame: pd.DataFrame) -> None:
    rows = _scenario(frame, Scenario.CARD_TESTING)
    probes = rows[rows.amount < 2]
    assert len(probes) > len(rows) / 2
    assert (rows.channel == "ecommerce").all() or (rows.channel == "moto").sum() == 0
    hits = 0
    for _card, incident in rows.groupby("card_token"):
        tiny, big = incident[incident.amount < 2], incident[incident.amount >= 100]
        hits += bool(
            len(tiny) >= 2
            and len(big) >= 1
            and tiny.event_time.min() < big.event_time.min()
            and big.event_time.max() - tiny.event_time.min() < timedelta(hours=12)
        )
    assert hits >= 0.8 * rows.card_token.nunique()


def test_account_takeover_uses_a_device_and_ip_the_card_never_used(frame: pd.DataFrame) -> None:
    rows = _scenario(frame, Scenario.ACCOUNT_TAKEOVER)
    assert rows.device_id.notna().all()
    assert rows.ip.notna().all()
    for card, incident in rows.groupby("card_token"):
        first = incident.iloc[0]
        before = _earlier_rows(frame, str(card), first.event_time)
        assert first.device_id not in set(before.device_id.dropna())
        assert first.ip not in set(before.ip.dropna())
        usual_blocks = {ip.split(".")[0] for ip in before[before.scenario == ""].ip.dropna()}
        assert first.ip.split(".")[0] not in usual_blocks  # the IP jumps to another region


def test_spree_packs_many_payments_into_a_few_hours(frame: pd.DataFrame) -> None:
    rows = _scenario(frame, Scenario.SPREE)
    per_card = rows.groupby("card_token").event_time.agg(["count", "min", "max"])
    dense = (per_card["count"] >= 5) & (per_card["max"] - per_card["min"] < timedelta(hours=12))
    assert dense.mean() >= 0.8
    legit_daily = (
        frame[frame.scenario == ""].groupby([frame.card_token, frame.event_time.dt.date]).size()
    )
    assert per_card["count"].median() > legit_daily.quantile(0.99)


def test_compromised_merchant_victims_share_a_merchant_visited_before(
    frame: pd.DataFrame,
) -> None:
    rows = _scenario(frame, Scenario.COMPROMISED_MERCHANT)
    victims = rows.groupby("card_token").event_time.min()
    assert len(victims) >= 5
    visited: list[set[str]] = []
    for card, first_fraud in victims.items():
        before = _earlier_rows(frame, str(card), first_fraud)
        visited.append(set(before[before.card_present & (before.scenario == "")].merchant_id))
    common = set.intersection(*visited)
    assert common, "all victims of a small simulation paid at one compromised merchant"


def test_high_amount_outliers_dwarf_the_cards_usual_spending(frame: pd.DataFrame) -> None:
    rows = _scenario(frame, Scenario.HIGH_AMOUNT)
    usual = frame[frame.scenario == ""].groupby("card_token").amount.median()
    assert (rows.amount >= 1000).all()
    ratio = rows.amount.to_numpy() / usual.reindex(rows.card_token).fillna(50.0).to_numpy()
    assert np.median(ratio) > 10


def test_fraud_is_less_often_3ds_authenticated(frame: pd.DataFrame) -> None:
    online = frame[frame.channel == "ecommerce"]
    share = online.groupby("is_fraud")["features.auth_3ds"].mean()
    assert share[True] < 0.5 < share[False]
    assert (frame.loc[frame.channel != "ecommerce", "features.auth_3ds"] == 0.0).all()


def test_labels_arrive_late_and_refer_to_real_transactions(
    small: Simulation, frame: pd.DataFrame
) -> None:
    tx = frame.set_index("transaction_id")
    labels = small.labels.to_pandas()
    assert labels.labelled_at.is_monotonic_increasing
    assert labels.transaction_id.isin(tx.index).all()
    assert (labels.labelled_at > labels.event_time).all()
    assert (labels.event_time.to_numpy() == tx.event_time[labels.transaction_id].to_numpy()).all()
    assert (labels.card_token.to_numpy() == tx.card_token[labels.transaction_id].to_numpy()).all()
    delay = labels.labelled_at - labels.event_time
    chargebacks = delay[labels.source == "chargeback"]
    assert timedelta(days=10) < chargebacks.median() < timedelta(days=30)
    assert chargebacks.min() < timedelta(days=7)
    assert chargebacks.max() <= timedelta(days=90)
    assert (delay[labels.source == "reviewer"] <= timedelta(hours=48)).all()
    reported = labels[labels.source != "reviewer"]
    assert tx.is_fraud[reported.transaction_id].all()
    unreported = 1 - reported.transaction_id.nunique() / tx.is_fraud.sum()
    assert 0.03 < unreported < 0.35  # default: 15 % of incidents never reported


def test_drift_shifts_amounts_mix_and_adds_a_scenario() -> None:
    at = START + timedelta(days=7)
    drift = DriftConfig(
        at=at, amount_multiplier=2.0, mcc_weight_multipliers={"5815": 5.0},
        new_scenarios=(Scenario.ACCOUNT_TAKEOVER,),
    )  # fmt: skip
    for config, expected in ((SMALL, 1.0), (SMALL.model_copy(update={"drift": drift}), 2.0)):
        table = simulate(config).transactions.to_pandas()
        legit = table[table.scenario == ""]
        late = legit.event_time >= at
        ratio = legit.amount[late].median() / legit.amount[~late].median()
        assert expected * 0.8 < ratio < expected * 1.25
    digital_goods = legit.mcc == "5815"
    assert digital_goods[late].mean() > 2 * digital_goods[~late].mean()
    takeovers = table[table.scenario == Scenario.ACCOUNT_TAKEOVER.value]
    assert len(takeovers) > 0
    assert (takeovers.event_time >= at).all()
    with pytest.raises(ValidationError):
        SimulationConfig(start=START, days=1, drift=DriftConfig(at=START + timedelta(days=2)))


def test_every_row_converts_to_a_contract_directly_and_through_jsonl(tmp_path: Path) -> None:
    sim = simulate(SMALL.model_copy(update={"n_transactions": 2_000}))
    direct = list(iter_transactions(sim.transactions))
    assert len(direct) == 2_000
    assert sum(sim.transactions["is_fraud"].to_pylist()) == 20
    tx_path, labels_path = write(sim, tmp_path, "jsonl")
    lines = tx_path.read_bytes().splitlines()
    assert len(lines) == len(direct)
    for line, expected in zip(lines, direct, strict=True):
        row = orjson.loads(line)
        truth = [row.pop(key) for key in TRUTH_COLUMNS]
        assert isinstance(truth[0], bool)
        assert Transaction.model_validate_json(orjson.dumps(row)) == expected
        assert row == orjson.loads(encode(expected))  # exactly the contract's JSON
    label_lines = labels_path.read_bytes().splitlines()
    labels = [Label.model_validate_json(line) for line in label_lines]
    assert len(labels) == sim.labels.num_rows
    assert {label.transaction_id for label in labels} <= {tx.transaction_id for tx in direct}


def test_parquet_round_trip_preserves_both_tables(tmp_path: Path) -> None:
    sim = simulate(SMALL.model_copy(update={"n_transactions": 3_000}))
    tx_path, labels_path = write(sim, tmp_path, "parquet")
    assert pq.read_table(tx_path).equals(sim.transactions)
    assert pq.read_table(labels_path).equals(sim.labels)
    with pytest.raises(SimulatorError):
        write(sim, tmp_path, "csv")  # type: ignore[arg-type]


def test_live_stream_is_seeded_ordered_and_includes_fraud() -> None:
    config = SMALL.only(Scenario.CARD_TESTING)

    def take(n: int) -> list[Transaction]:
        stream = live_transactions(config, START, 5.0, "live", epoch_events=1_000)
        return list(itertools.islice(stream, n))

    events = take(4_500)  # 10-minute epochs of 3,000 payments: crosses into the second
    assert events == take(4_500)
    times = [tx.event_time for tx in events]
    assert times == sorted(times)
    assert len({tx.transaction_id for tx in events}) == len(events)
    assert events[0].transaction_id == "live-000000000001"
    assert events[-1].transaction_id == "live-000000004500"
    assert events[-1].event_time >= START + timedelta(minutes=10)
    testers = [tx for tx in events if (tx.ip or "").startswith("185.")]  # the proxy block
    assert len(testers) >= 30  # 1 % of each epoch
    assert any(tx.amount < 2 for tx in testers)
    assert all(tx.channel == "ecommerce" for tx in testers)


def test_readme_examples_run() -> None:
    readme = Path(simulator.__file__).with_name("README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert blocks
    for block in blocks:
        exec(compile(block, "simulator/README.md", "exec"), {})  # noqa: S102 - our own docs
