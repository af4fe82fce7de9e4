"""A card's recent transactions for the case page: from the archive when one is set
(every payment, with its decision and label), else the card's cases in the store."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from fraudstream.history.query import Archive
from fraudstream.review.schema import Case
from fraudstream.review.store import CaseStore

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TimelineRow:
    transaction_id: str
    event_time: datetime
    amount: float
    currency: str
    merchant_id: str
    action: str | None
    score: float | None
    label: str | None


Timeline = Callable[[str, int], list[TimelineRow]]


def from_store(store: CaseStore) -> Timeline:
    """The card's reviewed cases (what the store knows without an archive)."""

    def rows(card_token: str, limit: int) -> list[TimelineRow]:
        with store.sessions() as db:
            query = select(Case).where(Case.card_token == card_token)
            found = db.scalars(query.order_by(Case.event_time.desc()).limit(limit))
            return [
                TimelineRow(
                    c.transaction_id,
                    c.event_time,
                    c.amount,
                    c.currency,
                    c.merchant_id,
                    c.action_suggested,
                    c.score,
                    c.verdict,
                )
                for c in found
            ]

    return rows


def from_archive(
    url: str, fallback: Timeline, opener: Callable[[str], Archive] | None = None
) -> Timeline:
    """The archive's card timeline (`history.query`: every payment with its first decision
    and latest label), or `fallback` when the archive cannot be read. `opener` (tests)
    stands in for `Archive(url)`."""

    def rows(card_token: str, limit: int) -> list[TimelineRow]:
        try:
            with (opener or Archive)(url) as archive:
                table = archive.card_timeline(card_token, limit).to_pylist()
        except Exception as exc:  # any archive failure degrades to the store's view
            _log.warning("card timeline from the archive failed (%s); showing cases only", exc)
            return fallback(card_token, limit)
        return [
            TimelineRow(r["transaction_id"], r["event_time"], float(r["amount"]), r["currency"],
                        r["merchant_id"], r["action"], r["score"], r["label_verdict"])
            for r in table
        ]  # fmt: skip

    return rows
