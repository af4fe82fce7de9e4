"""The backtest's replay and report on in-memory archives (no broker, no Redis)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fraudstream.contracts import (
    Action,
    Decision,
    DecisionPath,
    Label,
    LabelSource,
    Transaction,
    Verdict,
)
from fraudstream.errors import ConfigurationError
from fraudstream.features.compute import Event
from fraudstream.features.pipeline import FeaturePipeline
from fraudstream.features.pipeline import replay as training_replay
from fraudstream.history import layout
from fraudstream.history import report as reporting
from fraudstream.history.backtest import Candidate, Window, load_history, replay
from fraudstream.history.backtest_cli import local_root
from fraudstream.history.query import Archive
from fraudstream.history.rows import (
    EPOCH,
    archived_columns,
    archived_events,
    archived_transactions,
)
from fraudstream.rules.engine import RulePack
from fraudstream.scoring.model import scoring_spec
from fraudstream.scoring.models import ModelSet
from fraudstream.simulator import SimulationConfig
from fraudstream.simulator.archive import archive_tables
from fraudstream.simulator.config import Scenario
from fraudstream.simulator.simulate import Simulation, simulate
from tests.factories import NOW, transaction

REPO = Path(__file__).resolve().parents[2]
DEFAULT_TEXT = (REPO / "config" / "rules.yaml").read_text()
DEFAULT_RULES = RulePack.from_yaml(DEFAULT_TEXT)
# The default pack and one more rule at its end: decline a card's repeated tiny payments.
PROBES = RulePack.from_yaml(
    DEFAULT_TEXT.replace("version: default-2026-11", "version: probes-1")
    + """
  - id: CARD_PROBES
    description: a second tiny payment on one card within minutes (decayed count)
    when:
      all:
        - {feature: card_count_10m, op: ge, value: 1.8}
        - {field: amount, op: lt, value: 2}
    action: decline
    reason: CARD_PROBES
"""
)
LATER = NOW + timedelta(days=400)  # every simulated label is known by then


@cache
def _simulation(partitions: int, days: int = 6) -> tuple[Simulation, pa.Table, pa.Table]:
    config = SimulationConfig(seed=11, n_transactions=8_000, days=days, n_cards=800,
                              n_merchants=120, fraud_rate=0.01)  # fmt: skip
    sim = simulate(config.only(Scenario.CARD_TESTING))
    transactions, labels = archive_tables(sim, partitions)
    return sim, transactions, labels


def _archive(partitions: int = 3, days: int = 6) -> Archive:
    _sim, transactions, labels = _simulation(partitions, days)
    return Archive.from_tables(transactions=transactions, labels=labels)


def _rules_only(pack: RulePack = DEFAULT_RULES) -> Candidate:
    return Candidate(pack, ModelSet())


def test_a_rule_declining_card_testing_shows_that_scenarios_fraud_as_caught() -> None:
    sim, _, _ = _simulation(3)
    scenario = dict(zip(sim.transactions["transaction_id"].to_pylist(),
                        sim.transactions["scenario"].to_pylist(), strict=True))  # fmt: skip
    with _archive() as archive:
        window = Window.last_days(archive, 5, LATER)
        history, labels = load_history(archive, window)
    with_rule = replay(history, labels, _rules_only(PROBES), window.start)
    without = replay(history, labels, _rules_only(), window.start)
    ids = with_rule.history["transaction_id"].to_pylist()
    fraud = pc.fill_null(with_rule.history["is_fraud"], False).to_pylist()
    amounts = with_rule.history["amount"].to_pylist()
    probes = {i for i, tid in enumerate(ids)
              if scenario[tid] == "card_testing" and fraud[i] and amounts[i] < 2}  # fmt: skip
    caught = {i for i, rule in enumerate(with_rule.decisive_rule)
              if rule in {"CARD_PROBES", "CARD_TESTING_BURST"}}  # fmt: skip
    assert len(probes) >= 20
    assert len(caught & probes) >= 0.8 * len(probes)  # all but each incident's first probe
    assert len(caught - probes) <= 0.1 * len(caught)  # and hardly anything else
    report = reporting.build(with_rule, _rules_only(PROBES), window)
    rows = {r.rule_id: r for r in report.rules}
    assert rows["CARD_PROBES"].decided + rows["CARD_TESTING_BURST"].decided == len(caught)
    ours = report.sides[reporting.CANDIDATE]
    base = reporting.build(without, _rules_only(), window).sides[reporting.CANDIDATE]
    by_new_rule = {i for i in caught & probes if with_rule.decisive_rule[i] == "CARD_PROBES"}
    assert ours.fraud_declined == base.fraud_declined + len(by_new_rule) > base.fraud_declined
    assert base.fraud_declined < 0.5 * len(probes)  # the default pack misses most of them
    assert ours.prevented_amount > base.prevented_amount


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))


def test_folding_the_warm_up_gives_the_window_the_features_of_a_whole_replay() -> None:
    with _archive() as archive:
        window = Window.last_days(archive, 2, LATER)
        history, labels = load_history(archive, window)
    whole = replay(history, labels, _rules_only(), EPOCH, keep_features=True)
    warmed = replay(history, labels, _rules_only(), window.start, keep_features=True)
    assert warmed.warmup_rows > 0.5 * history.num_rows
    assert whole.features is not None
    assert warmed.features is not None
    start_us = (window.start - EPOCH) // timedelta(microseconds=1)
    in_window = pc.cast(whole.history["event_time"], pa.int64()).to_numpy() >= start_us
    assert warmed.history["transaction_id"].to_pylist() == [
        tid for tid, keep in zip(whole.history["transaction_id"].to_pylist(), in_window,
                                 strict=True) if keep
    ]  # fmt: skip
    assert _same(warmed.features, whole.features[in_window])


def test_on_one_partition_the_replay_computes_the_training_pipelines_features() -> None:
    """Serving's partitioned state on one partition is training's single state, bit for bit."""
    days = 12  # longer than the label delay, so label risk is not all zero
    with _archive(partitions=1, days=days) as archive:
        window = Window(EPOCH, NOW + timedelta(days=400), LATER)
        history, labels = load_history(archive, window)
    replayed = replay(history, labels, _rules_only(), EPOCH, keep_features=True)
    by_offset = replayed.history.sort_by("kafka_offset")
    _sim, _, label_table = _simulation(1, days)
    expected = training_replay(
        FeaturePipeline(scoring_spec(None)), archived_transactions(by_offset),
        [Label.model_validate(row, strict=False)
         for row in label_table.select(list(Label.model_fields)).to_pylist()],
    )  # fmt: skip
    order = pc.sort_indices(replayed.history["kafka_offset"]).to_numpy()
    assert replayed.features is not None
    assert _same(replayed.features[order], expected)
    columns = FeaturePipeline(scoring_spec(None)).columns
    risk = [columns[f"{e}_label_risk_30d"] for e in ("merchant", "device", "ip")]
    assert (np.nan_to_num(replayed.features[:, risk]) > 0).any()  # labels reached the features


def _tables(
    txs: list[Transaction],
    label: tuple[Label, datetime] | None = None,
    decisions: list[Decision] | None = None,
) -> Archive:
    def stamps(times: list[datetime]) -> list[int | None]:
        return [int(t.timestamp() * 1000) for t in times]

    tx = layout.table(Transaction, txs, [0] * len(txs), list(range(len(txs))),
                      stamps([t.event_time for t in txs]))  # fmt: skip
    labels = layout.table(Label, [label[0]], [0], [0], stamps([label[1]])) if label else None
    made = (
        layout.table(Decision, decisions, [0] * len(decisions), list(range(len(decisions))),
                     [None] * len(decisions))
        if decisions else None
    )  # fmt: skip
    return Archive.from_tables(transactions=tx, decisions=made, labels=labels)


def _merchant_risk(archive: Archive) -> list[float]:
    window = Window(EPOCH, NOW + timedelta(days=30), LATER)
    history, labels = load_history(archive, window)
    replayed = replay(history, labels, _rules_only(), EPOCH, keep_features=True)
    assert replayed.features is not None
    at = FeaturePipeline(scoring_spec(None)).columns["merchant_label_risk_1d"]
    return [float(v) for v in replayed.features[:, at]]


def test_a_label_counts_from_when_the_scorer_could_read_it() -> None:
    delay = FeaturePipeline(scoring_spec(None)).delay
    first = transaction(transaction_id="tx-1", event_time=NOW, merchant_id="m-1")
    second = transaction(transaction_id="tx-2", event_time=NOW + timedelta(days=delay + 1),
                         merchant_id="m-1", card_token="card-0002")  # fmt: skip
    label = Label(transaction_id="tx-1", verdict=Verdict.FRAUD, source=LabelSource.REVIEWER,
                  labelled_at=NOW + timedelta(hours=1), merchant_id="m-1",
                  event_time=NOW)  # fmt: skip
    on_time = _merchant_risk(_tables([first, second], (label, label.labelled_at)))
    assert on_time == [0.0, 1.0]  # the first day's one payment, known to be fraud
    # The same label given at one hour but delivered after the second payment was decided:
    # the scorer could not have known it then, so neither does the replay.
    late = _merchant_risk(_tables([first, second], (label, second.event_time + timedelta(hours=1))))
    assert late == [0.0, 0.0]


def test_a_producers_time_zone_survives_the_archive() -> None:
    """Local-hour features read the payment's own zone, which the archive keeps."""
    tokyo = timezone(timedelta(hours=9))
    tx = transaction(transaction_id="tx-1", event_time=NOW.astimezone(tokyo))
    with _tables([tx]) as archive:
        history, _ = load_history(archive, Window(EPOCH, NOW + timedelta(days=1), LATER))
    (back,) = archived_transactions(history)
    assert back.event_time == tx.event_time
    assert back.event_time.utcoffset() == timedelta(hours=9)


def test_the_report_counts_each_side_and_the_changes() -> None:
    amounts = [3.0, 20_000.0, 50.0, 15_000.0]  # the default pack reviews above 10,000
    txs = [
        transaction(transaction_id=f"tx-{i}", event_time=NOW + timedelta(minutes=i),
                    card_token=f"card-000{i}", amount=a)
        for i, a in enumerate(amounts)
    ]  # fmt: skip
    actual = [Action.APPROVE, Action.APPROVE, Action.DECLINE, Action.REVIEW]
    decisions = [
        Decision(transaction_id=tx.transaction_id, card_token=tx.card_token, action=action,
                 path=DecisionPath.RULES, event_time=tx.event_time,
                 decided_at=tx.event_time + timedelta(milliseconds=5), latency_ms=5.0)
        for tx, action in zip(txs, actual, strict=True)
    ]  # fmt: skip
    fraud = Label(transaction_id="tx-1", verdict=Verdict.FRAUD, source=LabelSource.CHARGEBACK,
                  labelled_at=NOW + timedelta(days=3))  # fmt: skip
    with _tables(txs, (fraud, fraud.labelled_at), decisions) as archive:
        window = Window(EPOCH, NOW + timedelta(days=1), LATER)
        history, labels = load_history(archive, window)
    candidate = _rules_only()
    report = reporting.build(replay(history, labels, candidate, EPOCH), candidate, window)
    ours, theirs = report.sides[reporting.CANDIDATE], report.sides[reporting.ACTUAL]
    # rules only and no model: review above 1,000 and below it approve, HARD_LIMIT aside
    assert ours.counts == {"approve": 2, "review": 2, "decline": 0}
    assert theirs.counts == {"approve": 2, "review": 1, "decline": 1}
    assert (ours.fraud, ours.fraud_reviewed, ours.fraud_declined) == (1, 1, 0)
    assert (theirs.fraud_approved, theirs.false_positive_rate) == (1, 1 / 3)
    assert report.changes == {"approve->review": 1, "decline->approve": 1}
    assert [e["transaction_id"] for e in report.examples] == ["tx-1", "tx-2"]  # fraud first
    hard_limit = next(r for r in report.rules if r.rule_id == "HARD_LIMIT")
    assert (hard_limit.hits, hard_limit.decided, hard_limit.fraud_hits) == (2, 2, 1)
    assert report.agreement["compared"] == 4
    assert report.agreement["same_action"] == 2
    text = reporting.render(report)
    assert "approve->review" in text
    assert "HARD_LIMIT" in text


def test_events_from_archived_columns_equal_those_of_the_transactions() -> None:
    """The replay builds `Event`s from columns; they must be what the scorer builds."""
    _sim, transactions, _ = _simulation(3)
    zones = pa.array([(i % 5 - 2) * 5400 for i in range(len(transactions))], pa.int32())
    rows = transactions.set_column(
        transactions.schema.get_field_index(layout.LOCAL_OFFSET_COLUMN),
        layout.LOCAL_OFFSET_COLUMN, zones,
    )  # fmt: skip
    expected = [Event.from_transaction(tx) for tx in archived_transactions(rows)]
    assert archived_events(rows, archived_columns(rows)) == expected
    utc = [Event.from_transaction(tx) for tx in archived_transactions(transactions)]
    moved = [e.local_hour != u.local_hour for e, u in zip(expected, utc, strict=True)]
    assert sum(moved) > 0.7 * len(moved)  # the zones do move the local hour


def test_backtests_read_local_archives_and_say_so_for_object_storage() -> None:
    assert local_root("archive") == "archive"
    assert local_root("file:///srv/archive") == "/srv/archive"
    with pytest.raises(ConfigurationError, match="s3:// archives are read by Spark"):
        local_root("s3://bucket/prefix")  # refused before any network call
