"""Pure feature maths: one event and the entities' state vectors in, feature values out.

No I/O and no clock: time is the event's own time. Functions update the state vectors
in place, in a fixed order, so replaying the same events over the same starting state
gives bit-identical results wherever it runs (training replay or the scorer).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from fraudstream.contracts import Channel, Transaction
from fraudstream.features.state import DAY, HOUR, LAYOUTS, NAN, Entity, Layout, Slots, stable_hash

EARTH_RADIUS_KM = 6371.0
LABEL_WINDOW_S = 30 * DAY
MAX_GAP_S = 30 * DAY  # "time since last" is capped here (and used when there is no history)
# MCCs with high fraud exposure: electronics, jewellery, money transfer, ATM, gambling, ...
HIGH_RISK_MCC = frozenset({"4829", "5732", "5944", "5967", "6011", "6051", "7995"})
# Lookups resolved once: this module runs per event on the scorer's hot path.
_CARD = LAYOUTS[Entity.CARD]
_CARD_SLOTS = tuple(_CARD.slot(name) for name in ("merchants", "countries", "devices"))
_CARD_LOCATION = tuple(_CARD.index(name) for name in ("loc_ts", "loc_lat", "loc_lon"))
_CHANNELS = tuple((f"channel_{c.value}", c.value) for c in Channel if c is not Channel.POS)
_PREFIX = {entity: entity.value for entity in Entity}


@dataclass(frozen=True, slots=True)
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
    if not math.isnan(last) and ts - last > layout.ttl_s:
        state[:] = layout.empty()
        last = NAN
    if math.isnan(last):
        return NAN
    gap = max(ts - last, 0.0)
    if gap > 0.0:
        n = len(layout.windows)
        for i, window in enumerate(layout.windows):
            factor = math.exp(-gap / window)
            state[1 + i] *= factor
            state[1 + n + i] *= factor
    return gap


def add(state: list[float], layout: Layout, ts: float, amount: float) -> None:
    """Count the event in every window and move the entity's clock forward."""
    n = len(layout.windows)
    for i in range(n):
        state[1 + i] += 1.0
        state[1 + n + i] += amount
    if math.isnan(state[0]) or ts > state[0]:
        state[0] = ts


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


def distinct_since(state: list[float], slots: Slots, since: float) -> float:
    """How many remembered keys were seen at or after `since`."""
    end = slots.offset + slots.width
    return float(sum(1 for pos in range(slots.offset + 1, end, 2) if state[pos] >= since))


def _ratio_to_mean(amount: float, count: float, total: float) -> float:
    """Amount relative to the entity's decayed mean amount (1.0 without history)."""
    return amount / (total / count) if count > 1e-9 else 1.0


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def _windows(out: dict[str, float], prefix: str, state: list[float], layout: Layout) -> None:
    n = len(layout.windows)
    for i, (count_name, sum_name) in enumerate(_window_names(prefix, layout.windows)):
        out[count_name] = state[1 + i]
        out[sum_name] = state[1 + n + i]


@cache
def _window_names(prefix: str, windows: tuple[float, ...]) -> tuple[tuple[str, str], ...]:
    return tuple(
        (f"{prefix}_count_{window_label(w)}", f"{prefix}_sum_{window_label(w)}") for w in windows
    )


def window_label(seconds: float) -> str:
    if seconds < HOUR:
        return f"{round(seconds / 60)}m"
    if seconds < DAY:
        return f"{round(seconds / HOUR)}h"
    return f"{round(seconds / DAY)}d"


def card_features(state: list[float], ev: Event, out: dict[str, float]) -> None:
    """Velocity, amount history, novelty and travel of the card (updates its state)."""
    layout = LAYOUTS[Entity.CARD]
    gap = advance(state, layout, ev.ts)
    n = len(layout.windows)
    count_30d, sum_30d = state[n], state[2 * n]  # the last window is 30 days
    since_last = MAX_GAP_S if math.isnan(gap) else min(gap, MAX_GAP_S)
    out["card_log_seconds_since_last"] = math.log1p(since_last)
    out["card_amount_ratio_30d"] = _ratio_to_mean(ev.amount, count_30d, sum_30d)
    _travel(state, layout, ev, out)
    merchants, countries, devices = _CARD_SLOTS
    out["card_new_merchant"] = float(
        remember(state, merchants.offset, merchants.size, stable_hash(ev.merchant), ev.ts)
    )
    out["card_new_country"] = float(
        remember(state, countries.offset, countries.size, stable_hash(ev.country), ev.ts)
    )
    out["card_new_device"] = (
        float(remember(state, devices.offset, devices.size, stable_hash(ev.device), ev.ts))
        if ev.device is not None
        else 0.0
    )
    add(state, layout, ev.ts, ev.amount)
    _windows(out, "card", state, layout)
    out["card_distinct_merchants_24h"] = distinct_since(state, merchants, ev.ts - DAY)
    out["card_distinct_countries_7d"] = distinct_since(state, countries, ev.ts - 7 * DAY)
    out["card_distinct_devices_7d"] = distinct_since(state, devices, ev.ts - 7 * DAY)


def _travel(state: list[float], layout: Layout, ev: Event, out: dict[str, float]) -> None:
    """Distance and implied speed since the card's last located payment."""
    at_ts, at_lat, at_lon = _CARD_LOCATION
    distance = speed = NAN
    if ev.lat is not None and ev.lon is not None:
        if not math.isnan(state[at_lat]):
            distance = haversine_km(state[at_lat], state[at_lon], ev.lat, ev.lon)
            hours = max((ev.ts - state[at_ts]) / HOUR, 1.0 / 60.0)  # at least one minute
            speed = distance / hours
        state[at_ts], state[at_lat], state[at_lon] = ev.ts, ev.lat, ev.lon
    out["card_distance_km"] = distance
    out["card_speed_kmh"] = speed


def merchant_features(state: list[float], ev: Event, out: dict[str, float]) -> None:
    """The merchant's traffic and its fraud labels known so far (updates its state)."""
    layout = LAYOUTS[Entity.MERCHANT]
    advance(state, layout, ev.ts)
    n = len(layout.windows)
    count_30d, sum_30d = state[n], state[2 * n]
    out["merchant_amount_ratio_30d"] = _ratio_to_mean(ev.amount, count_30d, sum_30d)
    labels = _labels_now(state, layout, ev.ts)
    out["merchant_fraud_labels_30d"] = labels
    out["merchant_fraud_rate_30d"] = labels / (count_30d + 1.0)
    add(state, layout, ev.ts, ev.amount)
    _windows(out, "merchant", state, layout)


def _labels_now(state: list[float], layout: Layout, ts: float) -> float:
    label_ts = state[layout.index("label_ts")]
    if math.isnan(label_ts):
        return 0.0
    return state[layout.index("fraud_labels_30d")] * math.exp(
        -max(ts - label_ts, 0.0) / LABEL_WINDOW_S
    )


def apply_fraud_label(state: list[float], ts: float) -> None:
    """Count a fraud label for a merchant at the time it became known (not the event time)."""
    layout = LAYOUTS[Entity.MERCHANT]
    current = _labels_now(state, layout, ts)
    label_ts = state[layout.index("label_ts")]
    state[layout.index("fraud_labels_30d")] = current + 1.0
    state[layout.index("label_ts")] = ts if math.isnan(label_ts) else max(ts, label_ts)
    if math.isnan(state[0]):
        state[0] = ts  # so the TTL applies to label-only merchants too


def shared_entity_features(
    entity: Entity, state: list[float] | None, ev: Event, out: dict[str, float]
) -> None:
    """Device or IP: traffic and how many cards share it (NaN when the event has none)."""
    prefix = _PREFIX[entity]
    layout = LAYOUTS[entity]
    if state is None:
        for window in layout.windows:
            out[f"{prefix}_count_{window_label(window)}"] = NAN
            out[f"{prefix}_sum_{window_label(window)}"] = NAN
        out[f"{prefix}_distinct_cards_24h"] = NAN
        return
    advance(state, layout, ev.ts)
    cards = layout.slot("cards")
    remember(state, cards.offset, cards.size, stable_hash(ev.card), ev.ts)
    add(state, layout, ev.ts, ev.amount)
    _windows(out, prefix, state, layout)
    out[f"{prefix}_distinct_cards_24h"] = distinct_since(state, cards, ev.ts - DAY)


def event_features(ev: Event, out: dict[str, float]) -> None:
    """Features of the payment itself."""
    angle = 2 * math.pi * ev.local_hour / 24.0
    out["amount_log"] = math.log1p(ev.amount)
    out["hour_sin"] = math.sin(angle)
    out["hour_cos"] = math.cos(angle)
    out["card_present"] = float(ev.card_present)
    for name, channel in _CHANNELS:
        out[name] = float(ev.channel == channel)
    out["high_risk_mcc"] = float(ev.mcc in HIGH_RISK_MCC)
    out["has_location"] = float(ev.lat is not None)
