"""Poison pills: finding the record that makes every batch fail, so its partition moves on.

A batch whose transaction fails is rolled back and read again. When batches keep
failing, the loop halves the batch size after each failure until a batch of one record
fails twice: that record is set aside (dead-lettered with reason `poison`, its state
still counted so a replay agrees) and the batch size grows back. If several records in a
row fail alone, the fault is not in the records (a topic refusing everything, a broker
problem): isolation pauses for a while instead of dead-lettering good input, and the
stuck loop shows on liveness and the lag.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

_log = logging.getLogger(__name__)
RecordId = tuple[str, int, int]  # topic, partition, offset


@dataclass
class Isolation:
    """Batch-size control and the set of records to set aside (pure logic, injected clock)."""

    batch_max: int
    max_in_a_row: int = 5  # poison records in a row before isolation pauses
    pause_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    limit: int = 0
    poison: set[RecordId] = field(default_factory=set)
    _failures: int = 0
    _strikes: dict[RecordId, int] = field(default_factory=dict)
    _in_a_row: int = 0
    _paused_until: float = 0.0

    def __post_init__(self) -> None:
        self.limit = self.limit or self.batch_max

    def failed(self, records: Sequence[RecordId]) -> RecordId | None:
        """A batch of `records` was rolled back; returns a record newly set aside, if any."""
        self._failures += 1
        if self._failures < 2 or not records or self.clock() < self._paused_until:
            return None
        if len(records) > 1:
            self.limit = max(1, len(records) // 2)
            return None
        record = records[0]
        self._strikes[record] = self._strikes.get(record, 0) + 1
        if self._strikes[record] < 2:
            return None
        self._in_a_row += 1
        if self._in_a_row > self.max_in_a_row:
            _log.error("%d records in a row failed alone: the fault is not in the records (a "
                       "topic refusing everything?); not setting more aside for %.0f s",
                       self._in_a_row - 1, self.pause_s)  # fmt: skip
            self._paused_until = self.clock() + self.pause_s
            self._in_a_row = 0
            self.limit = self.batch_max
            return None
        self.poison.add(record)
        del self._strikes[record]
        return record

    def committed(self, records: Sequence[RecordId]) -> None:
        """A batch committed: failures reset, the batch size grows back."""
        self._failures = 0
        self._strikes.clear()
        done = self.poison.intersection(records)
        self.poison -= done
        if len(records) > len(done):
            self._in_a_row = 0
        self.limit = min(self.batch_max, self.limit * 2)
