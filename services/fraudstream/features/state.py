"""Per-entity feature state: small fixed-layout float vectors with an explicit time-to-live.

Each entity (card, merchant, device, IP) keeps a flat list of float64 values. The layout
is declared here once; the same bytes live in a Python dict while replaying history for
training and in Redis while serving, so both paths compute bit-identical features.

Windowed counts and sums are exponentially decayed aggregates: on each update the old
value is multiplied by exp(-dt / window) before the new event is added. This is the
standard O(1)-state approximation of a sliding window (an event `window` seconds old
weighs 1/e); exact windows would need every event kept per entity. Merchants, devices
and IPs also count their payments per day over the last `RING_DAYS` days (a ring of
daily counts): the denominators of the delay-aligned label risk (`features.labels`).

Serving splits an entity's state by input partition (`combine` merges the parts for
reading): each part is then a pure function of one partition's log, so it can be
rebuilt by replaying that partition alone, and instances owning different partitions
never write the same bytes. A stored part carries the layout version it was written
with (`LAYOUT_VERSION`); a change of layout rebuilds instead of misreading.
"""

from __future__ import annotations

import hashlib
import math
import struct
import zlib
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0
NAN = math.nan
RING_DAYS = 40  # payments per day kept by entities with label risk (`features.labels`)


class Entity(StrEnum):
    CARD = "card"
    MERCHANT = "merchant"
    DEVICE = "device"
    IP = "ip"


@dataclass(frozen=True)
class Slots:
    """A small recency set of hashed ids inside a state vector: (hash, last seen) pairs."""

    offset: int
    size: int

    @property
    def width(self) -> int:
        return 2 * self.size


@dataclass(frozen=True)
class Layout:
    """Positions of the values of one entity's state vector."""

    entity: Entity
    windows: tuple[float, ...]  # decayed count and sum per window, in seconds
    ttl_s: float  # state older than this (in event time) is treated as empty
    extra: tuple[str, ...]  # named scalar values after the windows
    slots: tuple[tuple[str, int], ...] = ()  # named recency sets and their sizes
    days: int = 0  # payments per day over this many days (a ring), after the slots

    @property
    def count_at(self) -> int:
        return 1  # position 0 is the last event time

    @property
    def sum_at(self) -> int:
        return 1 + len(self.windows)

    def index(self, name: str) -> int:
        return 1 + 2 * len(self.windows) + self.extra.index(name)

    def slot(self, name: str) -> Slots:
        offset = 1 + 2 * len(self.windows) + len(self.extra)
        for slot_name, size in self.slots:
            if slot_name == name:
                return Slots(offset, size)
            offset += 2 * size
        raise KeyError(name)

    @cached_property
    def ring_at(self) -> int:
        """Position of the ring's newest day (epoch days); its `days` counts follow, the
        count of day k at `ring_at + 1 + k % days`."""
        return 1 + 2 * len(self.windows) + len(self.extra) + 2 * sum(s for _, s in self.slots)

    @cached_property  # read per event on the hot path
    def width(self) -> int:
        return self.ring_at + (1 + self.days if self.days else 0)

    def empty(self) -> list[float]:
        """A fresh state: no history (last time NaN, location NaN, everything else 0)."""
        state = [0.0] * self.width
        state[0] = NAN
        if self.days:
            state[self.ring_at] = NAN
        for name in self.extra:
            if name.startswith("loc_"):
                state[self.index(name)] = NAN
        return state


LAYOUTS: dict[Entity, Layout] = {
    Entity.CARD: Layout(
        Entity.CARD,
        windows=(10 * MINUTE, HOUR, DAY, 7 * DAY, 30 * DAY),
        ttl_s=60 * DAY,
        extra=("loc_ts", "loc_lat", "loc_lon"),
        # "transactions": hashes of the card's latest transaction ids (duplicate check).
        slots=(("merchants", 8), ("countries", 4), ("devices", 4), ("transactions", 8)),
    ),
    Entity.MERCHANT: Layout(
        Entity.MERCHANT,
        windows=(HOUR, DAY, 7 * DAY, 30 * DAY),
        ttl_s=90 * DAY,
        extra=(),
        days=RING_DAYS,
    ),
    Entity.DEVICE: Layout(
        Entity.DEVICE, (HOUR, DAY), 30 * DAY, extra=(), slots=(("cards", 4),), days=RING_DAYS
    ),
    Entity.IP: Layout(
        Entity.IP, (HOUR, DAY), 30 * DAY, extra=(), slots=(("cards", 4),), days=RING_DAYS
    ),
}


# Precompiled codecs per state width: these run for every entity of every scored event.
_CODECS = {layout.width: struct.Struct(f"<{layout.width}d") for layout in LAYOUTS.values()}


def encode_state(state: list[float]) -> bytes:
    """Lossless little-endian float64 bytes (what Redis stores)."""
    codec = _CODECS.get(len(state)) or struct.Struct(f"<{len(state)}d")
    return codec.pack(*state)


def decode_state(entity: Entity, data: bytes | None) -> list[float]:
    """The state vector from bytes; empty for missing or foreign-layout data."""
    layout = LAYOUTS[entity]
    if data is None or len(data) != 8 * layout.width:
        return layout.empty()
    return list(_CODECS[layout.width].unpack(data))


def stable_hash(value: str) -> float:
    """A process-independent 32-bit hash, exact in a float64 (Python's hash() is salted)."""
    return float(zlib.crc32(value.encode()))


def id_hash(value: str) -> float:
    """A 52-bit hash, exact in a float64: for ids compared for equality (duplicates), where
    32 bits would collide once in a few billion pairs."""
    return float(int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest()) >> 12)


# Version of the layouts above: bump it whenever a layout changes. Stored parts and the
# per-partition checkpoints carry it; a mismatch makes the scorer rebuild from the log.
LAYOUT_VERSION = 4
_PART_HEAD = struct.Struct("<BIq")  # layout version, partition epoch, last applied offset


@dataclass(frozen=True, slots=True)
class PartHeader:
    """Who wrote a stored part: the layout version, the partition's epoch (a rebuild starts
    a new one, so leftovers of an older epoch read as empty) and the last input offset
    folded into it."""

    version: int
    epoch: int
    offset: int


def encode_part(state: list[float], epoch: int, offset: int) -> bytes:
    """A partition's part of an entity's state, as stored: header, then the vector."""
    return _PART_HEAD.pack(LAYOUT_VERSION, epoch, offset) + encode_state(state)


def part_header(data: bytes) -> PartHeader | None:
    """The header of a stored part (None if it is too short to have one)."""
    if len(data) < _PART_HEAD.size:
        return None
    return PartHeader(*_PART_HEAD.unpack_from(data))


def decode_part(entity: Entity, data: bytes) -> list[float] | None:
    """The vector of a stored part; None if it has another layout (version or width)."""
    layout = LAYOUTS[entity]
    if len(data) != _PART_HEAD.size + 8 * layout.width or data[0] != LAYOUT_VERSION:
        return None
    return list(_CODECS[layout.width].unpack_from(data, _PART_HEAD.size))


def combine(layout: Layout, parts: list[list[float]]) -> list[float]:
    """One state from the parts of several partitions, as if one had seen all their events:
    decayed windows summed at the latest part's time, the latest location and labels, and
    the most recent keys of each recency set. A single part is returned as a copy, bit for
    bit, so one partition reads exactly what a single-state replay computes."""
    live = [p for p in parts if not math.isnan(p[0])]
    if len(live) <= 1:
        return list(live[0] if live else parts[0])
    latest = max(p[0] for p in live)
    live = [p for p in live if latest - p[0] <= layout.ttl_s]  # expired parts count as empty
    out = layout.empty()
    out[0] = latest
    n = len(layout.windows)
    for part in live:
        gap = latest - part[0]
        for i, window in enumerate(layout.windows, start=1):
            factor = math.exp(-gap / window)
            out[i] += part[i] * factor
            out[n + i] += part[n + i] * factor
    _combine_extra(layout, live, out)
    if layout.days:
        _combine_ring(layout, live, out)
    for name, size in layout.slots:
        slots = layout.slot(name)
        seen: dict[float, float] = {}
        for part in live:
            for pos in range(slots.offset, slots.offset + slots.width, 2):
                if part[pos + 1] > 0.0:
                    seen[part[pos]] = max(seen.get(part[pos], 0.0), part[pos + 1])
        recent = sorted(seen.items(), key=lambda kv: kv[1], reverse=True)[:size]
        for j, (key, when) in enumerate(recent):
            out[slots.offset + 2 * j], out[slots.offset + 2 * j + 1] = key, when
    return out


def _combine_extra(layout: Layout, parts: list[list[float]], out: list[float]) -> None:
    """Named scalars: the location of the latest located part."""
    if "loc_ts" in layout.extra:
        at = [layout.index(n) for n in ("loc_ts", "loc_lat", "loc_lon")]
        located = [p for p in parts if not math.isnan(p[at[0]])]
        if located:
            best = max(located, key=lambda p: p[at[0]])
            for i in at:
                out[i] = best[i]


def _combine_ring(layout: Layout, parts: list[list[float]], out: list[float]) -> None:
    """Payments per day: summed day by day over the days the newest part's ring holds (a
    part whose ring is behind has its days after its newest cleared first)."""
    at, days = layout.ring_at, layout.days
    rings = [p for p in parts if not math.isnan(p[at])]
    if not rings:
        return
    newest = int(max(p[at] for p in rings))
    out[at] = float(newest)
    base, end = at + 1, at + 1 + days
    total = [0.0] * days
    for part in rings:
        ring = part[base:end]
        behind = newest - int(part[at])
        for day in range(newest - min(behind, days) + 1, newest + 1):
            ring[day % days] = 0.0  # a day this part has not reached: older data there
        total = [a + b for a, b in zip(total, ring, strict=True)]
    out[base:end] = total
