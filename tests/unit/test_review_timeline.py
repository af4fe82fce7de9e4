"""The case page's card timeline from the archive (in-memory tables), and the fallback to
the card's cases when the archive cannot be read."""

from __future__ import annotations

from datetime import timedelta

from fraudstream.contracts import Action, Decision, Label, Transaction, Verdict
from fraudstream.history.query import Archive
from fraudstream.review.timeline import TimelineRow, from_archive
from tests.factories import NOW
from tests.unit.test_history_query import _decision, _label, _table, _tx

FALLBACK = [TimelineRow("from-cases", NOW, 1.0, "EUR", "m", "review", 0.5, None)]


def archive_of_two_payments(_url: str) -> Archive:
    txs = [
        (_tx("tx-1", NOW, card="card-x", amount=12.5), (0, 0)),
        (_tx("tx-2", NOW + timedelta(minutes=5), card="card-x", amount=80.0), (0, 1)),
    ]
    return Archive.from_tables(
        _table(Transaction, txs),
        _table(Decision, [(_decision("tx-2", Action.REVIEW), (0, 0))]),
        _table(Label, [(_label("tx-2", Verdict.FRAUD, NOW + timedelta(days=1)), (0, 0))]),
    )


def test_the_timeline_reads_payments_decisions_and_labels_from_the_archive() -> None:
    timeline = from_archive("memory://", lambda *_: FALLBACK, opener=archive_of_two_payments)
    rows = timeline("card-x", 10)
    assert [(r.transaction_id, r.amount, r.action, r.score, r.label) for r in rows] == [
        ("tx-2", 80.0, "review", 0.5, "fraud"),
        ("tx-1", 12.5, None, None, None),
    ]
    assert rows[0].event_time == NOW + timedelta(minutes=5)


def test_an_unreadable_archive_falls_back_to_the_cases() -> None:
    def broken(_url: str) -> Archive:
        raise OSError("bucket unreachable")

    assert (
        from_archive("s3://nowhere", lambda *_: FALLBACK, opener=broken)("card-x", 10) == FALLBACK
    )
