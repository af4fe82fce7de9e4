"""Per-entity feature state: small fixed-layout float vectors with an explicit time-to-live.

Each entity (card, merchant, device, IP) keeps a flat list of float64 values. The layout
is declared here once; the same bytes live in a Python dict while replaying history for
training and in Redis while serving, so both paths compute bit-identical features.

Windowed counts and sums are exponentially decayed aggregates: on each update the old
value is multiplied by exp(-dt / window) before the new event is added. This is the
standard O(1)-state approximation of a sliding window (an event `window` seconds old
weighs 1/e); exact windows would need every event kept per entity.
"""

from __future__ import annotations

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

    @cached_property  # read per event on the hot path
    def width(self) -> int:
        return 1 + 2 * len(self.windows) + len(self.extra) + 2 * sum(s for _, s in self.slots)

    def empty(self) -> list[float]:
        """A fresh state: no history (last time NaN, location NaN, everything else 0)."""
        state = [0.0] * self.width
        state[0] = NAN
        for name in self.extra:
            if name.startswith("loc_") or name == "label_ts":
                state[self.index(name)] = NAN
        return state


LAYOUTS: dict[Entity, Layout] = {
    Entity.CARD: Layout(
        Entity.CARD,
        windows=(10 * MINUTE, HOUR, DAY, 7 * DAY, 30 * DAY),
        ttl_s=60 * DAY,
        extra=("loc_ts", "loc_lat", "loc_lon"),
        slots=(("merchants", 8), ("countries", 4), ("devices", 4)),
    ),
    Entity.MERCHANT: Layout(
        Entity.MERCHANT,
        windows=(HOUR, DAY, 7 * DAY, 30 * DAY),
        ttl_s=90 * DAY,
        extra=("fraud_labels_30d", "label_ts"),
    ),
    Entity.DEVICE: Layout(Entity.DEVICE, (HOUR, DAY), 30 * DAY, extra=(), slots=(("cards", 4),)),
    Entity.IP: Layout(Entity.IP, (HOUR, DAY), 30 * DAY, extra=(), slots=(("cards", 4),)),
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
