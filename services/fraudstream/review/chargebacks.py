"""Chargebacks as labels: a CSV file (or any rows) of disputed transactions becomes one
`fraud` label each on `fraud.labels`, through the same outbox as reviewers' verdicts.

Columns: `transaction_id` (required), and optional `card_token`, `merchant_id`,
`event_time` (ISO 8601 with offset), `device_id`, `ip`, `reason`. Fields missing from a row
are taken from the case when the transaction was reviewed; an open case is closed as fraud.
A row already imported (same transaction) is skipped, so a file can be loaded twice.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from fraudstream.contracts import Label, LabelSource, Verdict
from fraudstream.review.schema import Case
from fraudstream.review.store import CaseStore, audit, queue_label
from fraudstream.review.triage import ReviewVerdict, Status

MAX_ROWS = 1_000_000
_OPTIONAL = ("card_token", "merchant_id", "event_time", "device_id", "ip")


@dataclass
class ImportResult:
    queued: int = 0
    duplicates: int = 0
    invalid: list[str] = field(default_factory=list)  # "line N: why"


def import_rows(
    store: CaseStore, rows: Iterable[Mapping[str, str]], feed: str, now: datetime
) -> ImportResult:
    """Queue a chargeback label per valid row, in one transaction."""
    result = ImportResult()
    with store.sessions.begin() as db:
        for line, row in enumerate(rows, start=2):  # line 1 is the header
            if line > MAX_ROWS + 1:
                result.invalid.append(f"line {line}: more than {MAX_ROWS:,} rows; split the file")
                break
            tx_id = (row.get("transaction_id") or "").strip()
            found = db.get(Case, tx_id) if tx_id else None
            known = {k: getattr(found, k) for k in _OPTIONAL} if found is not None else {}
            given = {k: v.strip() for k in _OPTIONAL if (v := row.get(k) or "").strip()}
            try:
                label = Label.model_validate(
                    {
                        "transaction_id": tx_id,
                        "verdict": Verdict.FRAUD,
                        "source": LabelSource.CHARGEBACK,
                        "actor": feed,
                        "labelled_at": now,
                        **{k: v for k, v in known.items() if v is not None},
                        **given,
                        "note": (row.get("reason") or "chargeback").strip()[:1024],
                    },
                    strict=False,
                )
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(map(str, first["loc"]))
                result.invalid.append(f"line {line}: {where}: {first['msg']}")
                continue
            if not queue_label(db, label, now):
                result.duplicates += 1
                continue
            result.queued += 1
            if found is not None and found.status != Status.DECIDED.value:
                found.status, found.verdict = Status.DECIDED.value, ReviewVerdict.FRAUD.value
                found.verdict_by, found.verdict_at = feed, now
                found.claimed_by = found.lease_until = None
            audit(db, feed, "chargeback", tx_id, now)
    return result


def import_file(store: CaseStore, path: Path, feed: str, now: datetime) -> ImportResult:
    """`import_rows` over a CSV file with a header line."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "transaction_id" not in reader.fieldnames:
            result = ImportResult()
            result.invalid.append("line 1: the header must name a transaction_id column")
            return result
        return import_rows(store, reader, feed, now)
