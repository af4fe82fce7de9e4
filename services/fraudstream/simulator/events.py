"""Simulated payments as parallel numpy arrays, and the time helpers that place them.

Generators produce `Events` (one row per payment, codes instead of strings) so a million
payments cost a few array operations; `tables.py` turns them into contract columns.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Self

import numpy as np
from numpy.typing import NDArray

from fraudstream.simulator.catalog import HOURLY_RHYTHM

Ints = NDArray[np.int64]
Floats = NDArray[np.float64]
Bools = NDArray[np.bool_]

US_PER_S = 1_000_000
US_PER_HOUR = 3600 * US_PER_S
US_PER_DAY = 24 * US_PER_HOUR
NO_VALUE = -1  # device or IP absent


@dataclass(frozen=True)
class Window:
    """A half-open span of simulated time in microseconds since the epoch."""

    lo: int
    hi: int

    @property
    def span(self) -> int:
        return self.hi - self.lo


@dataclass(frozen=True)
class Events:
    """Payments, one row per index; lat/lon NaN and device/ip -1 when absent."""

    time_us: Ints
    card: Ints
    merchant: Ints
    amount: Floats
    channel: Ints  # index into catalog.CHANNELS
    lat: Floats
    lon: Floats
    device: Ints
    ip: Ints
    auth_3ds: Floats
    scenario: Ints  # index into config.SCENARIO_NAMES; 0 is legitimate
    incident: Ints  # fraud incident id, -1 for legitimate payments

    def __len__(self) -> int:
        return len(self.time_us)

    def take(self, index: Ints) -> Self:
        """The rows at `index`, in that order."""
        return type(self)(*(getattr(self, f.name)[index] for f in fields(self)))

    @classmethod
    def concat(cls, parts: list[Self]) -> Self:
        """All rows of `parts`, part after part."""
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))

    def sorted(self) -> Self:
        """Rows ordered by time; ties keep their order, so the result is deterministic."""
        return self.take(np.argsort(self.time_us, kind="stable").astype(np.int64))


def ints(values: object) -> Ints:
    """`values` as an int64 array."""
    return np.asarray(values, dtype=np.int64)


def floats(values: object) -> Floats:
    """`values` as a float64 array."""
    return np.asarray(values, dtype=np.float64)


def sample_times(rng: np.random.Generator, window: Window, phase: int, n: int) -> Ints:
    """`n` times in `window` following the daily rhythm, shifted by `phase` hours.

    The window is cut at UTC hour boundaries; each piece is weighted by its length and
    the rhythm at local hour `utc_hour + phase`, then times are uniform inside a piece.
    """
    edges, rhythm = _hourly(window, phase)
    lengths = np.diff(edges)
    weight = lengths * rhythm
    cell = np.searchsorted(np.cumsum(weight), rng.random(n) * weight.sum(), side="right")
    cell = np.minimum(cell, len(lengths) - 1)
    offset = (rng.random(n) * lengths[cell]).astype(np.int64)
    return ints((edges[cell] + offset) // 1000 * 1000)  # millisecond resolution


def expected_share(window: Window, phase: int) -> float:
    """Mean of rhythm / max(rhythm) over `window`: the share a thinned stream keeps."""
    edges, rhythm = _hourly(window, phase)
    return float((np.diff(edges) * rhythm).sum() / HOURLY_RHYTHM.max() / window.span)


def _hourly(window: Window, phase: int) -> tuple[Ints, Floats]:
    """`window` cut at UTC hour boundaries, and the rhythm of each piece."""
    first = window.lo - window.lo % US_PER_HOUR
    edges = np.arange(first, window.hi + US_PER_HOUR, US_PER_HOUR, dtype=np.int64)
    edges = np.unique(np.clip(edges, window.lo, window.hi))
    return ints(edges), floats(HOURLY_RHYTHM[(edges[:-1] // US_PER_HOUR + phase) % 24])


def segment_sizes(rng: np.random.Generator, total: int, low: int, high: int) -> Ints:
    """Random sizes in [low, high] summing exactly to `total` (the last one trimmed)."""
    if total <= 0:
        return ints([])
    sizes = rng.integers(low, high + 1, size=total // max(low, 1) + 1)
    ends = np.cumsum(sizes)
    count = int(np.searchsorted(ends, total)) + 1
    sizes = sizes[:count].copy()
    sizes[-1] -= int(ends[count - 1]) - total
    return ints(sizes)


def segment_offsets(gaps: Floats, sizes: Ints) -> Floats:
    """Running sum of `gaps` restarting at 0 at each segment's first row."""
    if sizes.size == 0 or gaps.size == 0:
        return floats(np.zeros(0))
    run = np.cumsum(gaps)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return floats(run - np.repeat(run[starts], sizes))


def place_incidents(
    rng: np.random.Generator, window: Window, sizes: Ints, offsets_s: Floats
) -> Ints:
    """Absolute times of incident rows from their offsets (seconds from incident start).

    Each incident lies wholly inside `window`; one longer than 90 % of the window is
    compressed to fit, so short spans (live epochs) still get whole incidents.
    """
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    duration = np.maximum.reduceat(offsets_s, starts) if len(sizes) else floats([])
    room = 0.9 * window.span / US_PER_S
    scale = np.minimum(1.0, room / np.maximum(duration, 1.0))
    begin = window.lo + rng.random(len(sizes)) * (window.span - duration * scale * US_PER_S)
    at = np.repeat(begin, sizes) + offsets_s * np.repeat(scale, sizes) * US_PER_S
    return ints(at // 1000 * 1000)
