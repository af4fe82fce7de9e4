"""Fraud labels as features: label risk over windows aligned to the label delay.

A label says a payment was fraud, and arrives days or weeks after it. The risk of a
merchant, device or IP at time t is the share of its payments in the w days that ended
`delay` days before t's day that are known, at t, to be fraud:

    risk_w(t) = frauds labelled by t among payments of days [today - delay - w, today - delay)
                / payments of those days

(the Fraud Detection Handbook's delayed terminal risk). With the delay set to how long
most labels take, the recent days whose labels cannot be known yet are left out of both
counts, so the risk does not sink with fresh traffic and it falls back to zero once the
fraud is more than `delay + w` days old. Payments not reported as fraud by t count as
legitimate. The payment counts per day live in the entity's state (`compute.count_day`);
the labels in a `LabelBook` per entity, keyed by the payment's time, so a payment at t
reads only the labels known at t, whatever order labels and payments arrived in, and
serving and the training replay agree to the bit.
"""

from __future__ import annotations

import bisect
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from fraudstream.features.state import DAY, LAYOUT_VERSION, RING_DAYS, PartHeader, part_header

RISK_WINDOWS_DAYS = (1, 7, 30)  # w: the windows the risk is computed over
DEFAULT_DELAY_DAYS = 0  # chosen by load_tests/bench_label_delay.py (see the README)
MAX_DELAY_DAYS = RING_DAYS - max(RISK_WINDOWS_DAYS)  # the per-day counts reach this far back
# Serving forgets labels of payments this much older than the newest label it folded: no
# window of a payment scored around now reaches them (a month of slack for late payments).
KEEP_S = (RING_DAYS + 30) * DAY
MAX_LABELS = 4096  # kept per entity and label partition (the oldest payments go first)
_TRIPLE = struct.Struct("<ddd")
_HEAD = struct.Struct("<BIq")


@dataclass
class LabelBook:
    """One entity's fraud labels: (payment time, labelled_at, transaction id hash), in
    payment time order."""

    entries: list[tuple[float, float, float]] = field(default_factory=list)

    def add(self, event_time: float, labelled_at: float, transaction: float) -> bool:
        """Record a label; a transaction counts once, from its earliest label (so the order
        labels arrive in does not matter). Returns whether the book changed."""
        for i, (_ts, at, h) in enumerate(self.entries):
            if h == transaction:
                if at <= labelled_at:
                    return False
                del self.entries[i]
                break
        bisect.insort(self.entries, (event_time, labelled_at, transaction))
        del self.entries[: max(len(self.entries) - MAX_LABELS, 0)]
        return True

    def forget_before(self, event_time: float) -> None:
        """Drop the labels of payments before `event_time` (serving's bound on a book)."""
        del self.entries[: bisect.bisect_left(self.entries, (event_time,))]

    def known_frauds(self, ts: float, end_day: int) -> list[int]:
        """Per window of `RISK_WINDOWS_DAYS`: the labels known at `ts` (labelled at or
        before it) of payments on days [end_day - w, end_day)."""
        widest = max(RISK_WINDOWS_DAYS)
        lo = bisect.bisect_left(self.entries, ((end_day - widest) * DAY,))
        hi = bisect.bisect_left(self.entries, (end_day * DAY,), lo)
        counts = [0] * len(RISK_WINDOWS_DAYS)
        for paid, at, _h in self.entries[lo:hi]:
            if at <= ts:
                age = end_day - math.floor(paid / DAY)  # 1 = the window's last day
                for i, w in enumerate(RISK_WINDOWS_DAYS):
                    counts[i] += age <= w
        return counts

    @classmethod
    def merged(cls, books: Iterable[LabelBook]) -> LabelBook:
        """One book from several (label partitions write a book each)."""
        return cls(sorted(entry for book in books for entry in book.entries))


def risk_values(frauds: Sequence[int], payments: Sequence[float]) -> list[float]:
    """Per window: the payment count, then the risk (frauds / payments; 0 without any)."""
    out: list[float] = []
    for known, n in zip(frauds, payments, strict=True):
        out += [n, min(1.0, known / n) if n > 0.0 else 0.0]
    return out


def encode_book(book: LabelBook, epoch: int, offset: int) -> bytes:
    """A label partition's book of one entity, as stored (same header as state parts)."""
    triples = b"".join(_TRIPLE.pack(*entry) for entry in book.entries)
    return _HEAD.pack(LAYOUT_VERSION, epoch, offset) + triples


def decode_book(data: bytes) -> tuple[PartHeader, LabelBook] | None:
    """Header and book; None for data of another layout."""
    header = part_header(data)
    body = len(data) - _HEAD.size
    if header is None or header.version != LAYOUT_VERSION or body % _TRIPLE.size:
        return None
    return header, LabelBook([
        _TRIPLE.unpack_from(data, at) for at in range(_HEAD.size, len(data), _TRIPLE.size)
    ])  # fmt: skip
