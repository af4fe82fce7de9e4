"""Which archived rows a retrain warms up on, trains on and evaluates on (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

_TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class RetrainWindows:
    """Consecutive event-time windows, each ending where the next starts:
    warm-up [warmup_start, train_start), training [train_start, eval_start), evaluation
    [eval_start, eval_end). Rows at or after `eval_end` are too recent for their labels to
    be known by `as_of` and are not read."""

    warmup_start: datetime
    train_start: datetime
    eval_start: datetime
    eval_end: datetime
    as_of: datetime

    @classmethod
    def plan(
        cls, newest: datetime, as_of: datetime, *, train_days: float, eval_days: float,
        warmup_days: float, mature_days: float,
    ) -> RetrainWindows:  # fmt: skip
        """Windows ending `mature_days` before the newest archived transaction (or
        `as_of`, if that is earlier: labels given later are not known yet)."""
        if newest.tzinfo is None or as_of.tzinfo is None:
            raise ValueError("newest and as_of must carry a time zone")
        eval_end = min(newest + _TICK, as_of) - timedelta(days=mature_days)
        eval_start = eval_end - timedelta(days=eval_days)
        train_start = eval_start - timedelta(days=train_days)
        return cls(train_start - timedelta(days=warmup_days), train_start, eval_start,
                   eval_end, as_of)  # fmt: skip

    def describe(self) -> str:
        """One line for logs: the three windows in UTC."""

        def day(when: datetime) -> str:
            return f"{when:%Y-%m-%d %H:%M}"

        return (f"warm-up {day(self.warmup_start)}, train {day(self.train_start)} to "
                f"{day(self.eval_start)}, evaluate to {day(self.eval_end)}, labels as of "
                f"{day(self.as_of)}")  # fmt: skip
