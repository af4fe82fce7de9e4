"""The archive queries on in-memory Arrow tables: as-of labels never leak, duplicates
resolve to the first record, windows are half-open."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudstream.contracts import (
    Action,
    Contract,
    Decision,
    DecisionPath,
    Label,
    LabelSource,
    Transaction,
    Verdict,
)
from fraudstream.history import layout
from fraudstream.history.query import Archive, TopicNames
from tests.factories import NOW, transaction

MINUTE = timedelta(minutes=1)
US = timedelta(microseconds=1)
# Where a record sits in its topic: (Kafka partition, offset).
Position = tuple[int, int]


def _table(contract: type[Contract], rows: Sequence[tuple[Contract, Position]]) -> pa.Table:
    return layout.table(
        contract,
        [message for message, _ in rows],
        [partition for _, (partition, _) in rows],
        [offset for _, (_, offset) in rows],
        [None] * len(rows),
    )


def _tx(tid: str, at: datetime = NOW, card: str = "card-0001", amount: float = 1.0) -> Transaction:
    return transaction(transaction_id=tid, event_time=at, card_token=card, amount=amount)


def _decision(tid: str, action: Action = Action.APPROVE, model: str = "m-1") -> Decision:
    return Decision(
        transaction_id=tid, card_token="card-0001", action=action, score=0.5,
        model_version=model, path=DecisionPath.ML, event_time=NOW,
        decided_at=NOW + timedelta(milliseconds=8), latency_ms=8.0,
    )  # fmt: skip


def _label(
    tid: str,
    verdict: Verdict,
    at: datetime,
    actor: str = "analyst-1",
    event_time: datetime | None = NOW,
) -> Label:
    return Label(
        transaction_id=tid, verdict=verdict, source=LabelSource.REVIEWER, actor=actor,
        labelled_at=at, event_time=event_time,
    )  # fmt: skip


def _ids(table: pa.Table) -> list[str]:
    return [str(tid) for tid in table["transaction_id"].to_pylist()]


# --- The as-of property: plain Python says which records count, DuckDB must agree. ---


@dataclass(frozen=True)
class Case:
    """Records of three topics as (id index, minute, position, ...) tuples."""

    ids: int
    txs: list[tuple[int, int, Position]]
    decisions: list[tuple[int, Position]]
    labels: list[tuple[int, Verdict, int, Position]]
    window: tuple[int, int]
    as_of: datetime


def _positions(draw: Callable[..., Any], count: int) -> list[Position]:
    """Unique positions in an order unrelated to the rows': table order must not matter."""
    offsets = draw(st.permutations(range(count)))
    return [(draw(st.integers(0, 2)), offset) for offset in offsets]


@st.composite
def cases(draw: Callable[..., Any]) -> Case:
    ids = draw(st.integers(1, 5))
    # Index `ids` names a transaction that is not archived: its labels match no row.
    tid = st.integers(0, ids)
    tx_rows = draw(st.lists(st.tuples(st.integers(0, ids - 1), st.integers(0, 30)), max_size=10))
    decision_rows = draw(st.lists(tid, max_size=8))
    label_rows = draw(
        st.lists(st.tuples(tid, st.sampled_from(Verdict), st.integers(0, 20)), max_size=14)
    )
    offset = draw(st.integers(-12, 14))  # as_of in any zone: the instant is what counts
    as_of = (NOW + draw(st.integers(0, 20)) * MINUTE).astimezone(timezone(timedelta(hours=offset)))
    window = tuple(sorted(draw(st.lists(st.integers(0, 31), min_size=2, max_size=2))))
    return Case(
        ids=ids,
        txs=[(i, m, p) for (i, m), p in zip(tx_rows, _positions(draw, len(tx_rows)), strict=True)],
        decisions=list(zip(decision_rows, _positions(draw, len(decision_rows)), strict=True)),
        labels=[
            (i, v, m, p)
            for (i, v, m), p in zip(label_rows, _positions(draw, len(label_rows)), strict=True)
        ],
        window=(window[0], window[1]),
        as_of=as_of,
    )


def _archive(case: Case, labels: list[tuple[int, Verdict, int, Position]]) -> Archive:
    txs = [
        (_tx(f"tx-{i}", NOW + m * MINUTE, amount=1.0 + row), p)
        for row, (i, m, p) in enumerate(case.txs)
    ]
    decisions = [
        (_decision(f"tx-{i}", model=f"m-{row}"), p) for row, (i, p) in enumerate(case.decisions)
    ]
    label_rows = [(_label(f"tx-{i}", v, NOW + m * MINUTE, _actor(p)), p) for i, v, m, p in labels]
    return Archive.from_tables(
        _table(Transaction, txs), _table(Decision, decisions), _table(Label, label_rows)
    )


def _actor(position: Position) -> str:
    """A label's actor names its position, so each label is told apart in the results."""
    return f"a-{position[0]}-{position[1]}"


def _known_labels(case: Case) -> dict[str, tuple[str, Verdict, int]]:
    """Per transaction id, (actor, verdict, minute) of its latest label as of `as_of`."""
    latest: dict[str, tuple[tuple[int, ...], str, Verdict]] = {}
    for i, verdict, minute, position in case.labels:
        key = (minute, *position)
        if NOW + minute * MINUTE <= case.as_of and (
            f"tx-{i}" not in latest or key > latest[f"tx-{i}"][0]
        ):
            latest[f"tx-{i}"] = (key, _actor(position), verdict)
    return {tid: (actor, verdict, key[0]) for tid, (key, actor, verdict) in latest.items()}


def _expected_history(case: Case) -> list[tuple[str, float, str | None, str | None, bool | None]]:
    first_tx: dict[str, tuple[Position, int, float]] = {}
    for row, (i, minute, position) in enumerate(case.txs):
        if f"tx-{i}" not in first_tx or position < first_tx[f"tx-{i}"][0]:
            first_tx[f"tx-{i}"] = (position, minute, 1.0 + row)
    first_decision: dict[str, tuple[Position, str]] = {}
    for row, (i, position) in enumerate(case.decisions):
        if f"tx-{i}" not in first_decision or position < first_decision[f"tx-{i}"][0]:
            first_decision[f"tx-{i}"] = (position, f"m-{row}")
    labels = _known_labels(case)
    start, end = case.window
    rows = sorted(
        (minute, tid, amount)
        for tid, (_, minute, amount) in first_tx.items()
        if start <= minute < end
    )
    return [
        (
            tid,
            amount,
            first_decision[tid][1] if tid in first_decision else None,
            labels[tid][0] if tid in labels else None,
            labels[tid][1] is Verdict.FRAUD if tid in labels else None,
        )
        for _, tid, amount in rows
    ]


def _rewrite_later_labels(
    case: Case, data: st.DataObject
) -> list[tuple[int, Verdict, int, Position]]:
    """The case's labels with every one given after as_of dropped, flipped or moved (to
    another time after as_of), plus new ones after as_of."""
    later_minute = st.integers(1, 30).map(lambda m: (case.as_of - NOW) // MINUTE + m)
    rewritten = []
    for i, verdict, minute, position in case.labels:
        if NOW + minute * MINUTE <= case.as_of:
            rewritten.append((i, verdict, minute, position))
            continue
        change = data.draw(st.sampled_from(["drop", "flip", "move"]))
        if change != "drop":
            flipped = Verdict.LEGIT if verdict is Verdict.FRAUD else Verdict.FRAUD
            new_verdict = flipped if change == "flip" else verdict
            rewritten.append((i, new_verdict, data.draw(later_minute), position))
    extra = data.draw(st.lists(st.tuples(st.integers(0, case.ids), later_minute), max_size=4))
    return rewritten + [(i, Verdict.FRAUD, m, (0, 1000 + n)) for n, (i, m) in enumerate(extra)]


@settings(max_examples=50)
@given(cases(), st.data())
def test_labels_as_of_are_the_latest_known_then_and_later_ones_never_leak(
    case: Case, data: st.DataObject
) -> None:
    start, end = (NOW + m * MINUTE for m in case.window)
    with _archive(case, case.labels) as archive:
        history = archive.labelled_history(start, end, case.as_of)
        latest = archive.labels_as_of(case.as_of)
    got = [
        (r["transaction_id"], r["amount"], r["model_version"], r["label_actor"], r["is_fraud"])
        for r in history.to_pylist()
    ]
    assert got == _expected_history(case)
    known = _known_labels(case)
    by_time = sorted(known, key=lambda tid: (known[tid][2], tid))
    assert [(r["transaction_id"], r["actor"], r["is_fraud"]) for r in latest.to_pylist()] == [
        (tid, known[tid][0], known[tid][1] is Verdict.FRAUD) for tid in by_time
    ]

    with _archive(case, _rewrite_later_labels(case, data)) as other:
        assert other.labelled_history(start, end, case.as_of).equals(history)
        assert other.labels_as_of(case.as_of).equals(latest)


# --- Examples ---


def test_the_window_is_half_open() -> None:
    start, end = NOW, NOW + timedelta(hours=1)
    times = {"before": start - US, "at-start": start, "last": end - US, "at-end": end}
    txs = [(_tx(tid, at), (0, n)) for n, (tid, at) in enumerate(times.items())]
    archive = Archive.from_tables(_table(Transaction, txs))
    assert _ids(archive.labelled_history(start, end, as_of=end)) == ["at-start", "last"]


def test_duplicates_resolve_to_the_lowest_partition_then_offset() -> None:
    txs = [
        (_tx("tx-1", amount=10.0), (1, 0)),
        (_tx("tx-1", amount=20.0), (0, 9)),
        (_tx("tx-1", amount=30.0), (0, 3)),
        (_tx("tx-2", NOW + MINUTE, amount=40.0), (2, 1)),
    ]
    decisions = [
        (_decision("tx-1", Action.DECLINE, "m-late"), (0, 7)),
        (_decision("tx-1", Action.REVIEW, "m-first"), (0, 2)),
        (_decision("tx-1", Action.APPROVE, "m-other"), (3, 0)),
    ]
    archive = Archive.from_tables(_table(Transaction, txs), _table(Decision, decisions))
    rows = archive.labelled_history(NOW, NOW + timedelta(hours=1), NOW).to_pylist()
    assert [(r["transaction_id"], r["amount"], r["action"], r["model_version"]) for r in rows] == [
        ("tx-1", 30.0, "review", "m-first"),
        ("tx-2", 40.0, None, None),
    ]


def test_a_later_copy_never_stands_in_for_a_first_one_outside_the_window() -> None:
    txs = [(_tx("tx-1", NOW - timedelta(days=1)), (0, 1)), (_tx("tx-1", NOW), (0, 2))]
    archive = Archive.from_tables(_table(Transaction, txs))
    assert archive.labelled_history(NOW, NOW + MINUTE, NOW).num_rows == 0
    assert _ids(archive.labelled_history(NOW - timedelta(days=1), NOW, NOW)) == ["tx-1"]


def test_label_as_of_is_inclusive_and_ties_go_to_the_later_record() -> None:
    txs = [(_tx("tx-1"), (0, 0))]
    labels = [
        (_label("tx-1", Verdict.LEGIT, NOW + MINUTE, actor="tie-earlier"), (4, 10)),
        (_label("tx-1", Verdict.FRAUD, NOW + MINUTE, actor="tie-later"), (4, 11)),
        (_label("tx-1", Verdict.LEGIT, NOW + 2 * MINUTE, actor="after"), (4, 12)),
    ]
    archive = Archive.from_tables(_table(Transaction, txs), labels=_table(Label, labels))

    def known(as_of: datetime) -> tuple[Any, ...]:
        (row,) = archive.labelled_history(NOW, NOW + MINUTE, as_of).to_pylist()
        return row["label_actor"], row["label_verdict"], row["labelled_at"], row["is_fraud"]

    assert known(NOW) == (None, None, None, None)
    assert known(NOW + MINUTE) == ("tie-later", "fraud", NOW + MINUTE, True)
    assert known(NOW + 2 * MINUTE - US) == ("tie-later", "fraud", NOW + MINUTE, True)
    assert known(NOW + 2 * MINUTE) == ("after", "legit", NOW + 2 * MINUTE, False)


def test_a_verdict_neither_fraud_nor_legit_leaves_is_fraud_null() -> None:
    row = _label("tx-1", Verdict.FRAUD, NOW).model_dump(mode="python")
    row |= {"verdict": "unsure", "kafka_partition": 0, "kafka_offset": 0}
    labels = pa.Table.from_pylist([row], schema=layout.schema(Label))
    archive = Archive.from_tables(_table(Transaction, [(_tx("tx-1"), (0, 0))]), labels=labels)
    (history,) = archive.labelled_history(NOW, NOW + MINUTE, NOW).to_pylist()
    assert (history["label_verdict"], history["is_fraud"]) == ("unsure", None)
    (latest,) = archive.labels_as_of(NOW).to_pylist()
    assert (latest["verdict"], latest["is_fraud"]) == ("unsure", None)


HISTORY_COLUMNS = [
    *(name for name in Transaction.model_fields if name != "schema_version"),
    "kafka_partition", "kafka_offset", "kafka_timestamp", "event_time_utc_offset_s",
    "action", "score", "member_scores", "reasons", "model_version", "shadow_model_version",
    "shadow_score", "decision_path", "decided_at", "latency_ms", "monitored",
    "label_verdict", "label_source", "label_actor", "labelled_at", "label_note", "is_fraud",
]  # fmt: skip
LABEL_COLUMNS = [*(name for name in Label.model_fields if name != "schema_version"), "is_fraud"]


def _assert_empty_with_columns(archive: Archive) -> None:
    history = archive.labelled_history(NOW, NOW + MINUTE, NOW)
    assert (history.num_rows, history.column_names) == (0, HISTORY_COLUMNS)
    assert history.schema.field("event_time").type == pa.timestamp("us", tz="UTC")
    assert history.schema.field("is_fraud").type == pa.bool_()
    timeline = archive.card_timeline("card-0001")
    assert (timeline.num_rows, timeline.column_names) == (0, HISTORY_COLUMNS)
    labels = archive.labels_as_of(NOW)
    assert (labels.num_rows, labels.column_names) == (0, LABEL_COLUMNS)


def test_missing_topics_read_as_empty_with_the_contract_columns() -> None:
    _assert_empty_with_columns(Archive.from_tables())


def test_a_root_without_topic_directories_reads_as_empty() -> None:
    names = TopicNames("transactions", "fraud.decisions", "fraud.labels")
    with Archive("/nonexistent/fraudstream-archive", names) as archive:
        _assert_empty_with_columns(archive)


def test_transactions_without_decisions_or_labels_have_null_columns() -> None:
    archive = Archive.from_tables(_table(Transaction, [(_tx("tx-1"), (0, 0))]))
    (row,) = archive.labelled_history(NOW, NOW + MINUTE, NOW).to_pylist()
    assert row["transaction_id"] == "tx-1"
    assert row["features"] == [("producer_risk", 0.25)]
    assert all(row[name] is None for name in HISTORY_COLUMNS[HISTORY_COLUMNS.index("action") :])


def test_card_timeline_is_newest_first_with_decisions_and_latest_labels() -> None:
    txs = [
        (_tx("tx-a1", NOW, card="card-a"), (0, 0)),
        (_tx("tx-a2", NOW + MINUTE, card="card-a"), (0, 1)),
        (_tx("tx-b1", NOW + 2 * MINUTE, card="card-b"), (1, 0)),
        (_tx("tx-a3", NOW + 3 * MINUTE, card="card-a"), (0, 2)),
    ]
    decisions = [(_decision("tx-a2", Action.REVIEW), (0, 0))]
    labels = [
        (_label("tx-a2", Verdict.FRAUD, NOW + timedelta(days=1)), (0, 0)),
        (_label("tx-a2", Verdict.LEGIT, NOW + timedelta(days=2)), (0, 1)),
    ]
    archive = Archive.from_tables(
        _table(Transaction, txs), _table(Decision, decisions), _table(Label, labels)
    )
    rows = archive.card_timeline("card-a").to_pylist()
    assert [(r["transaction_id"], r["action"], r["label_verdict"]) for r in rows] == [
        ("tx-a3", None, None),
        ("tx-a2", "review", "legit"),
        ("tx-a1", None, None),
    ]
    assert _ids(archive.card_timeline("card-a", limit=2)) == ["tx-a3", "tx-a2"]
    assert _ids(archive.card_timeline("card-b")) == ["tx-b1"]
    assert archive.card_timeline("card-' OR 1=1 --").num_rows == 0
    with pytest.raises(ValueError, match="limit"):
        archive.card_timeline("card-a", limit=0)


def test_labels_as_of_bounds_select_by_the_transaction_time() -> None:
    labels = [
        (_label("tx-early", Verdict.FRAUD, NOW, event_time=NOW - timedelta(hours=2)), (0, 0)),
        (_label("tx-in", Verdict.LEGIT, NOW, event_time=NOW - timedelta(hours=1)), (0, 1)),
        (_label("tx-late", Verdict.FRAUD, NOW, event_time=NOW), (0, 2)),
        (_label("tx-unknown", Verdict.FRAUD, NOW, event_time=None), (0, 3)),
        (_label("tx-future", Verdict.FRAUD, NOW + MINUTE, event_time=NOW), (0, 4)),
    ]
    archive = Archive.from_tables(labels=_table(Label, labels))
    window = {"start": NOW - timedelta(hours=1), "end": NOW}
    assert _ids(archive.labels_as_of(NOW, **window)) == ["tx-in"]
    assert _ids(archive.labels_as_of(NOW, start=window["start"])) == ["tx-in", "tx-late"]
    assert _ids(archive.labels_as_of(NOW, end=window["end"])) == ["tx-early", "tx-in"]
    assert _ids(archive.labels_as_of(NOW)) == ["tx-early", "tx-in", "tx-late", "tx-unknown"]


NAIVE = datetime(2026, 11, 23, 12, 0)  # no tzinfo: the point of the tests below


@pytest.mark.parametrize(
    "call",
    [
        lambda a: a.labelled_history(NAIVE, NOW, NOW),
        lambda a: a.labelled_history(NOW, NAIVE, NOW),
        lambda a: a.labelled_history(NOW, NOW, NAIVE),
        lambda a: a.labels_as_of(NAIVE),
        lambda a: a.labels_as_of(NOW, start=NAIVE),
        lambda a: a.labels_as_of(NOW, end=NAIVE),
    ],
)
def test_naive_times_are_refused(call: Callable[[Archive], object]) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        call(Archive.from_tables())


def test_an_end_before_the_start_is_refused() -> None:
    with pytest.raises(ValueError, match="before start"):
        Archive.from_tables().labelled_history(NOW, NOW - US, NOW)
