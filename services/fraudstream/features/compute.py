"""Pure feature maths: one event and the entities' state vectors in, feature values out.

No I/O and no clock: time is the event's own time. Functions update the state vectors
in place, in a fixed order, so replaying the same events over the same starting state
gives bit-identical results wherever it runs (training replay or the scorer).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from fraudstream.contracts import Channel, Transaction
from fraudstream.features.labels import (
    RISK_WINDOWS_DAYS,
    LabelBook,
    risk_values,
)
from fraudstream.features.state import (
    DAY,
    HOUR,
    LAYOUTS,
    NAN,
    Entity,
    Layout,
    Slots,
    stable_hash,
)

EARTH_RADIUS_KM = 6371.0
MAX_GAP_S = 30 * DAY  # "time since last" is capped here (and used when there is no history)
# MCCs with high fraud exposure: electronics, jewellery, money transfer, ATM, gambling, ...
HIGH_RISK_MCC = frozenset({"4829", "5732", "5944", "5967", "6011", "6051", "7995"})
# Lookups resolved once: this module runs per event on the scorer's hot path.
_CARD = LAYOUTS[Entity.CARD]
_MERCHANT = LAYOUTS[Entity.MERCHANT]
_CARD_SLOTS = tuple(_CARD.slot(name) for name in ("merchants", "countries", "devices"))
_CARD_LOCATION = tuple(_CARD.index(name) for name in ("loc_ts", "loc_lat", "loc_lon"))
_CHANNELS = tuple((f"channel_{c.value}", c.value) for c in Channel if c is not Channel.POS)
_PREFIX = {entity: entity.value for entity in Entity}


@dataclass(slots=True)
class Event:
    """The fields of a transaction that feature maths reads, in plain types."""

    ts: float  # event time, epoch seconds
    local_hour: float  # hour of day in the event's own time zone, with minutes as fraction
    card: str
    merchant: str
    device: str | None
    ip: str | None
    amount: float
    country: str
    lat: float | None
    lon: float | None
    mcc: str
    channel: str
    card_present: bool
    producer: Mapping[str, float] | None

    @classmethod
    def from_transaction(cls, tx: Transaction) -> Event:
        when = tx.event_time
        return cls(
            ts=when.timestamp(),
            local_hour=when.hour + when.minute / 60.0,
            card=tx.card_token,
            merchant=tx.merchant_id,
            device=tx.device_id,
            ip=tx.ip,
            amount=tx.amount,
            country=tx.country,
            lat=tx.latitude,
            lon=tx.longitude,
            mcc=tx.mcc,
            channel=tx.channel.value,
            card_present=tx.card_present,
            producer=tx.features,
        )


def advance(state: list[float], layout: Layout, ts: float) -> float:
    """Decay the windows to `ts`; returns seconds since the entity's last event (NaN if none).

    State older than the layout's TTL (in event time) is reset first, so expiry does not
    depend on when Redis happens to evict a key. Late events (ts before the last one) do
    not rewind the clock.
    """
    last = state[0]
    if math.isnan(last):
        return NAN
    gap = ts - last
    if gap > layout.ttl_s:
        state[:] = layout.empty()
        return NAN
    if gap <= 0.0:
        return 0.0
    n = len(layout.windows)
    for i, window in enumerate(layout.windows, start=1):
        factor = math.exp(-gap / window)
        state[i] *= factor
        state[n + i] *= factor
    return gap


def add(state: list[float], layout: Layout, ts: float, amount: float) -> None:
    """Count the event in every window and move the entity's clock forward."""
    n = len(layout.windows)
    for i in range(n):
        state[1 + i] += 1.0
        state[1 + n + i] += amount
    if math.isnan(state[0]) or ts > state[0]:
        state[0] = ts


def count_day(state: list[float], layout: Layout, ts: float) -> None:
    """Count a payment on its (UTC) day in the entity's ring of daily counts; days that fall
    out of the ring as it moves forward are cleared, a payment older than the ring is not
    counted."""
    at, days = layout.ring_at, layout.days
    day = math.floor(ts / DAY)
    newest = state[at]
    if math.isnan(newest) or day > newest:
        first = day - days + 1 if math.isnan(newest) else max(int(newest) + 1, day - days + 1)
        for k in range(first, day + 1):
            state[at + 1 + k % days] = 0.0
        state[at] = float(day)
    elif day <= newest - days:
        return
    state[at + 1 + day % days] += 1.0


def day_counts(state: list[float], layout: Layout, end_day: int) -> list[float]:
    """Per window of `RISK_WINDOWS_DAYS`: the payments on days [end_day - w, end_day)."""
    at, days = layout.ring_at, layout.days
    newest = state[at]
    if math.isnan(newest):
        return [0.0] * len(RISK_WINDOWS_DAYS)
    held = (int(newest) - days + 1, int(newest) + 1)  # the days the ring holds
    out, total, covered = [], 0.0, end_day
    for w in RISK_WINDOWS_DAYS:  # nested windows: add the days each one adds
        total += _ring_sum(state, at + 1, days, max(end_day - w, held[0]), min(covered, held[1]))
        covered = min(covered, end_day - w)
        out.append(total)
    return out


def _ring_sum(state: list[float], base: int, days: int, first: int, stop: int) -> float:
    """The ring's counts of days [first, stop) (at most `days` of them): one or two slices."""
    n = stop - first
    if n <= 0:
        return 0.0
    i = first % days
    if i + n <= days:
        return sum(state[base + i : base + i + n])
    return sum(state[base + i : base + days]) + sum(state[base : base + i + n - days])


def label_risk(
    state: list[float], layout: Layout, ts: float, book: LabelBook | None,
    delay_days: int | None,
) -> list[float]:  # fmt: skip
    """The delay-aligned label risk at `ts` (`features.labels`), in the order of
    `_risk_names`: per window, the payment count and the share known to be fraud. With
    no `delay_days`, zeros: a state update whose values nobody reads skips the work."""
    if delay_days is None:
        return _NO_RISK
    end_day = math.floor(ts / DAY) - delay_days
    payments = day_counts(state, layout, end_day)
    frauds = book.known_frauds(ts, end_day) if book is not None else _NO_FRAUDS
    return risk_values(frauds, payments)


_NO_FRAUDS = [0] * len(RISK_WINDOWS_DAYS)
_NO_RISK = [0.0] * (2 * len(RISK_WINDOWS_DAYS))


def _risk_names(prefix: str) -> tuple[str, ...]:
    return tuple(
        name
        for w in RISK_WINDOWS_DAYS
        for name in (f"{prefix}_delayed_count_{w}d", f"{prefix}_label_risk_{w}d")
    )


def remember(state: list[float], offset: int, size: int, key: float, ts: float) -> bool:
    """Record `key` as seen at `ts` in a recency set; returns True if it was new.

    A new key replaces the least recently seen slot (empty slots have time 0).
    """
    oldest = offset
    for pos in range(offset, offset + 2 * size, 2):
        if state[pos + 1] > 0.0 and state[pos] == key:
            state[pos + 1] = max(state[pos + 1], ts)
            return False
        if state[pos + 1] < state[oldest + 1]:
            oldest = pos
    state[oldest] = key
    state[oldest + 1] = ts
    return True


def seen_recently(state: list[float], slots: Slots, key: float) -> bool:
    """Whether `key` is in a recency set (without recording it)."""
    for pos in range(slots.offset, slots.offset + slots.width, 2):
        if state[pos + 1] > 0.0 and state[pos] == key:
            return True
    return False


def distinct_since(state: list[float], slots: Slots, since: float) -> float:
    """How many remembered keys were seen at or after `since`."""
    seen = state[slots.offset + 1 : slots.offset + slots.width : 2]
    return float(sum(when >= since for when in seen))


def _ratio_to_mean(amount: float, count: float, total: float) -> float:
    """Amount relative to the entity's decayed mean amount (1.0 without history)."""
    return amount / (total / count) if count > 1e-9 else 1.0


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def _windows(state: list[float], n: int) -> list[float]:
    """Decayed count and sum per window, interleaved as the catalog names them."""
    out = [0.0] * (2 * n)
    out[0::2] = state[1 : 1 + n]
    out[1::2] = state[1 + n : 1 + 2 * n]
    return out


def _window_names(prefix: str, windows: tuple[float, ...]) -> tuple[str, ...]:
    return tuple(
        name
        for w in windows
        for name in (f"{prefix}_count_{window_label(w)}", f"{prefix}_sum_{window_label(w)}")
    )


def window_label(seconds: float) -> str:
    if seconds < HOUR:
        return f"{round(seconds / 60)}m"
    if seconds < DAY:
        return f"{round(seconds / HOUR)}h"
    return f"{round(seconds / DAY)}d"


CARD_FEATURES = (
    "card_log_seconds_since_last", "card_amount_ratio_30d", "card_distance_km", "card_speed_kmh",
    "card_new_merchant", "card_new_country", "card_new_device",
    *_window_names("card", _CARD.windows),
    "card_distinct_merchants_24h", "card_distinct_countries_7d", "card_distinct_devices_7d",
)  # fmt: skip


def card_features(state: list[float], ev: Event) -> list[float]:
    """Velocity, amount history, novelty and travel of the card (updates its state);
    values in the order of `CARD_FEATURES`."""
    layout = _CARD
    gap = advance(state, layout, ev.ts)
    n = len(layout.windows)
    count_30d, sum_30d = state[n], state[2 * n]  # the last window is 30 days
    since_last = MAX_GAP_S if math.isnan(gap) else min(gap, MAX_GAP_S)
    distance, speed = _travel(state, ev)
    merchants, countries, devices = _CARD_SLOTS
    ts = ev.ts
    new_merchant = remember(state, merchants.offset, merchants.size, stable_hash(ev.merchant), ts)
    new_country = remember(state, countries.offset, countries.size, stable_hash(ev.country), ts)
    new_device = ev.device is not None and remember(
        state, devices.offset, devices.size, stable_hash(ev.device), ts
    )
    add(state, layout, ev.ts, ev.amount)
    return [
        math.log1p(since_last), _ratio_to_mean(ev.amount, count_30d, sum_30d), distance, speed,
        float(new_merchant), float(new_country), float(new_device),
        *_windows(state, n),
        distinct_since(state, merchants, ev.ts - DAY),
        distinct_since(state, countries, ev.ts - 7 * DAY),
        distinct_since(state, devices, ev.ts - 7 * DAY),
    ]  # fmt: skip


def _travel(state: list[float], ev: Event) -> tuple[float, float]:
    """Distance and implied speed since the card's last located payment."""
    at_ts, at_lat, at_lon = _CARD_LOCATION
    distance = speed = NAN
    if ev.lat is not None and ev.lon is not None:
        if not math.isnan(state[at_lat]):
            distance = haversine_km(state[at_lat], state[at_lon], ev.lat, ev.lon)
            hours = max((ev.ts - state[at_ts]) / HOUR, 1.0 / 60.0)  # at least one minute
            speed = distance / hours
        state[at_ts], state[at_lat], state[at_lon] = ev.ts, ev.lat, ev.lon
    return distance, speed


MERCHANT_FEATURES = (
    "merchant_amount_ratio_30d", *_window_names("merchant", _MERCHANT.windows),
    *_risk_names("merchant"),
)  # fmt: skip


def merchant_features(
    state: list[float], ev: Event, book: LabelBook | None = None,
    delay_days: int | None = None,
) -> list[float]:  # fmt: skip
    """The merchant's traffic and its label risk from `book`, its fraud labels
    (`features.labels`), `delay_days` back (without it, risk values are 0: an update only);
    updates its state; values in the order of `MERCHANT_FEATURES`."""
    layout = _MERCHANT
    advance(state, layout, ev.ts)
    n = len(layout.windows)
    count_30d, sum_30d = state[n], state[2 * n]
    ratio = _ratio_to_mean(ev.amount, count_30d, sum_30d)
    risk = label_risk(state, layout, ev.ts, book, delay_days)
    add(state, layout, ev.ts, ev.amount)
    count_day(state, layout, ev.ts)
    return [ratio, *_windows(state, n), *risk]


def shared_features(entity: Entity) -> tuple[str, ...]:
    """Feature names of a device or IP, in the order `shared_entity_features` returns them."""
    prefix = _PREFIX[entity]
    return (
        *_window_names(prefix, LAYOUTS[entity].windows), f"{prefix}_distinct_cards_24h",
        *_risk_names(prefix),
    )  # fmt: skip


def shared_entity_features(
    entity: Entity, state: list[float] | None, ev: Event, book: LabelBook | None = None,
    delay_days: int | None = None,
) -> list[float]:  # fmt: skip
    """Device or IP: traffic, how many cards share it and its label risk from `book`
    (NaN when the event has none); updates its state."""
    layout = LAYOUTS[entity]
    if state is None:
        return [NAN] * (2 * len(layout.windows) + 1 + 2 * len(RISK_WINDOWS_DAYS))
    advance(state, layout, ev.ts)
    risk = label_risk(state, layout, ev.ts, book, delay_days)
    cards = layout.slot("cards")
    remember(state, cards.offset, cards.size, stable_hash(ev.card), ev.ts)
    add(state, layout, ev.ts, ev.amount)
    count_day(state, layout, ev.ts)
    return [*_windows(state, len(layout.windows)), distinct_since(state, cards, ev.ts - DAY), *risk]


EVENT_FEATURES = (
    "amount_log", "hour_sin", "hour_cos", "card_present", *(name for name, _ in _CHANNELS),
    "high_risk_mcc", "has_location",
)  # fmt: skip


def event_features(ev: Event) -> list[float]:
    """Features of the payment itself, in the order of `EVENT_FEATURES`."""
    angle = 2 * math.pi * ev.local_hour / 24.0
    return [
        math.log1p(ev.amount), math.sin(angle), math.cos(angle), float(ev.card_present),
        *(float(ev.channel == channel) for _, channel in _CHANNELS),
        float(ev.mcc in HIGH_RISK_MCC), float(ev.lat is not None),
    ]  # fmt: skip
