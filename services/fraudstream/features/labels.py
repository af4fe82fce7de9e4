"""Merchant fraud labels as features: each label counts from its `labelled_at`, never
earlier, and once per transaction id.

A merchant's labels are kept as their times (and transaction id hashes), not folded into
one decayed number: a payment at `ts` reads the labels known at `ts` only, whatever order
labels and payments arrived in, so serving and the training replay agree to the bit. The
count is the same exponentially decayed count as the traffic windows (30-day window),
computed over the label times in order.
"""

from __future__ import annotations

import bisect
import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from fraudstream.features.state import DAY, LAYOUT_VERSION, PartHeader, part_header

LABEL_WINDOW_S = 30 * DAY  # a label known for 30 days weighs 1/e
MAX_LABELS = 4096  # kept per merchant and label partition (the oldest go first)
_PAIR = struct.Struct("<dd")
_HEAD = struct.Struct("<BIq")


@dataclass
class LabelBook:
    """One merchant's fraud labels: (labelled_at, transaction id hash), ascending."""

    entries: list[tuple[float, float]] = field(default_factory=list)
    _prefix: list[float] | None = field(default=None, repr=False, compare=False)

    def add(self, labelled_at: float, transaction: float) -> bool:
        """Record a label; a transaction counts once, at its earliest label (so the order
        labels arrive in does not matter). Returns whether the book changed."""
        for i, (at, h) in enumerate(self.entries):
            if h == transaction:
                if at <= labelled_at:
                    return False
                del self.entries[i]
                break
        bisect.insort(self.entries, (labelled_at, transaction))
        del self.entries[: max(len(self.entries) - MAX_LABELS, 0)]
        self._prefix = None
        return True

    def count_at(self, ts: float) -> float:
        """The decayed count of the labels known at `ts` (labelled at or before it)."""
        j = bisect.bisect_right(self.entries, (ts, math.inf))
        if j == 0:
            return 0.0
        prefix = self._prefix
        if prefix is None:
            prefix = self._prefix = _prefix_counts([at for at, _ in self.entries])
        last = self.entries[j - 1][0]
        return prefix[j - 1] * math.exp(-max(ts - last, 0.0) / LABEL_WINDOW_S)

    @classmethod
    def merged(cls, books: Iterable[LabelBook]) -> LabelBook:
        """One book from several (label partitions write a book each)."""
        return cls(sorted(entry for book in books for entry in book.entries))


def _prefix_counts(times: list[float]) -> list[float]:
    """The decayed count right after each label, in order."""
    out: list[float] = []
    count, last = 0.0, math.nan
    for at in times:
        count = (0.0 if math.isnan(last) else count * math.exp(-max(at - last, 0.0) /
                                                                 LABEL_WINDOW_S)) + 1.0  # fmt: skip
        last = at
        out.append(count)
    return out


def encode_book(book: LabelBook, epoch: int, offset: int) -> bytes:
    """A label partition's book of one merchant, as stored (same header as state parts)."""
    pairs = b"".join(_PAIR.pack(at, h) for at, h in book.entries)
    return _HEAD.pack(LAYOUT_VERSION, epoch, offset) + pairs


def decode_book(data: bytes) -> tuple[PartHeader, LabelBook] | None:
    """Header and book; None for data of another layout."""
    header = part_header(data)
    body = len(data) - _HEAD.size
    if header is None or header.version != LAYOUT_VERSION or body % _PAIR.size:
        return None
    entries = [_PAIR.unpack_from(data, at) for at in range(_HEAD.size, len(data), _PAIR.size)]
    return header, LabelBook([(float(a), float(h)) for a, h in entries])
