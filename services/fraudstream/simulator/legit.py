"""Legitimate payments in bulk: every step is an array operation over all rows at once.

Who pays follows card activity; when follows each card's daily rhythm; where mixes
favourite local shops, other local shops, online merchants and the odd trip abroad; how
much scales the merchant's typical ticket by the card holder's spending level.
"""

from __future__ import annotations

import numpy as np

from fraudstream.contracts import Channel
from fraudstream.simulator import catalog as cat
from fraudstream.simulator.config import DriftConfig
from fraudstream.simulator.events import (
    NO_VALUE,
    US_PER_S,
    Bools,
    Events,
    Floats,
    Ints,
    Window,
    floats,
    sample_times,
)
from fraudstream.simulator.events import ints as as_ints
from fraudstream.simulator.world import N_FAVOURITES, Population, weighted_choice

FAVOURITE_SHARE = 0.5  # of in-person payments, at one of the card's regular shops
TRAVEL_SHARE = 0.02  # of in-person payments, at a shop anywhere (a trip)
HOME_ONLINE_SHARE = 0.75  # of online payments, at a merchant of the home country
MOBILE_IP_SHARE = 0.25  # of online payments, from the card holder's second IP


def legit_events(
    pop: Population, rng: np.random.Generator, window: Window, n: int, drift: DriftConfig | None
) -> Events:
    """`n` legitimate payments inside `window` (unsorted)."""
    card = weighted_choice(rng, np.ones(pop.n_cards, dtype=bool), pop.card_activity, n)
    time_us = np.empty(n, dtype=np.int64)
    for phase in np.unique(pop.card_phase[card]):
        rows = np.flatnonzero(pop.card_phase[card] == phase)
        time_us[rows] = sample_times(rng, window, int(phase), rows.size)
    late = np.zeros(n, dtype=bool)
    if drift is not None:
        late = time_us >= int(drift.at.timestamp() * US_PER_S)
    merchant = _merchants(pop, rng, card, late, drift)
    kind = pop.merchant_kind[merchant]
    channel = as_ints(cat.KIND_CHANNEL[kind])
    online = kind == cat.Kind.ONLINE
    moto = online & (rng.random(n) < cat.MOTO_SHARE)
    channel[moto] = cat.CHANNEL_CODE[Channel.MOTO]
    ecommerce = online & ~moto
    present = cat.CHANNEL_CARD_PRESENT[channel]
    device = pop.card_device_start[card] + (rng.random(n) * pop.card_devices[card]).astype(int)
    ip = pop.card_ips[card, (rng.random(n) < MOBILE_IP_SHARE).astype(int)]
    authenticated = ecommerce & (rng.random(n) < cat.LEGIT_3DS_SHARE)
    return Events(
        time_us=time_us,
        card=card,
        merchant=merchant,
        amount=_amounts(pop, rng, card=card, merchant=merchant, late=late, drift=drift),
        channel=channel,
        lat=np.where(present, np.round(pop.merchant_lat[merchant], 5), np.nan),
        lon=np.where(present, np.round(pop.merchant_lon[merchant], 5), np.nan),
        device=as_ints(np.where(ecommerce, device, NO_VALUE)),
        ip=as_ints(np.where(ecommerce, ip, NO_VALUE)),
        auth_3ds=authenticated.astype(np.float64),
        scenario=np.zeros(n, dtype=np.int64),
        incident=np.full(n, -1, dtype=np.int64),
    )


def _merchants(
    pop: Population,
    rng: np.random.Generator,
    card: Ints,
    late: Bools,
    drift: DriftConfig | None,
) -> Ints:
    """Where each payment happens, drawn per (region, online, after-drift) group."""
    n = card.size
    online_share = pop.card_online_share[card]
    if drift is not None:
        online_share = np.where(late, online_share * drift.online_share_multiplier, online_share)
    online = rng.random(n) < np.minimum(online_share, 0.95)
    u = rng.random(n)
    anywhere = np.where(online, u >= HOME_ONLINE_SHARE, u < TRAVEL_SHARE)
    region = np.where(anywhere, -1, pop.card_region[card])
    key = (region + 1) * 4 + online * 2 + late
    merchant = np.empty(n, dtype=np.int64)
    pos = pop.is_pos()
    for group in np.unique(key):
        rows = np.flatnonzero(key == group)
        place, is_online, is_late = int(group) // 4 - 1, bool(group & 2), bool(group & 1)
        kind_ok = ~pos if is_online else pos
        where = kind_ok if place < 0 else kind_ok & (pop.merchant_region == place)
        weight = pop.merchant_popularity * _mcc_multiplier(pop, drift if is_late else None)
        merchant[rows] = weighted_choice(rng, where, weight, rows.size, kind_ok)
    regular = ~online & ~anywhere & (rng.random(n) < FAVOURITE_SHARE)
    slot = rng.integers(0, N_FAVOURITES, size=n)
    return as_ints(np.where(regular, pop.card_favourites[card, slot], merchant))


def _mcc_multiplier(pop: Population, drift: DriftConfig | None) -> Floats:
    """Per-merchant weight factor of the drifted merchant mix (1 before the drift)."""
    factor = np.ones(pop.n_merchants)
    if drift is not None:
        for mcc, multiplier in drift.mcc_weight_multipliers.items():
            factor[pop.merchant_mcc == mcc] = multiplier
    return factor


def _amounts(
    pop: Population,
    rng: np.random.Generator,
    *,
    card: Ints,
    merchant: Ints,
    late: Bools,
    drift: DriftConfig | None,
) -> Floats:
    """Ticket x spending level x noise; ATM cash in tens, subscriptions nearly fixed."""
    kind = pop.merchant_kind[merchant]
    sigma = np.where(kind == cat.Kind.RECURRING, 0.05, 0.5)
    amount = pop.merchant_ticket[merchant] * pop.card_spend[card] * rng.lognormal(0.0, sigma)
    if drift is not None:
        amount = np.where(late, amount * drift.amount_multiplier, amount)
    amount = np.where(kind == cat.Kind.ATM, np.maximum(np.round(amount, -1), 20.0), amount)
    return floats(np.maximum(np.round(amount, 2), 1.0))
