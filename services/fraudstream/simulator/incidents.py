"""Shared building blocks of fraud scenarios: where, with what device and IP, and rows.

A scenario decides, per incident, the victim card and a timeline; these helpers pick
merchants matching the fraudster's taste, mint devices and IPs the victim never used, and
assemble the rows. Everything is vectorised over all rows of a scenario at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fraudstream.simulator import catalog as cat
from fraudstream.simulator.events import (
    NO_VALUE,
    Bools,
    Events,
    Floats,
    Ints,
    Window,
    floats,
    ints,
)
from fraudstream.simulator.world import Population, weighted_choice

# Device and incident ids of scenario `code` start at code * ID_STRIDE, so they never clash.
ID_STRIDE = 10_000_000


@dataclass(frozen=True)
class Context:
    """What a scenario builder needs: the world, randomness and where it may act."""

    pop: Population
    rng: np.random.Generator
    window: Window  # incidents lie inside this span
    code: int  # the scenario's code (config.SCENARIO_CODE)
    legit: Events  # legitimate traffic, for scenarios that build on it

    def incidents(self, k: int) -> Ints:
        """Ids of this scenario's `k` incidents, unique across scenarios."""
        return ints(self.code * ID_STRIDE + np.arange(k))

    def fresh_devices(self, k: int) -> Ints:
        """One device id per incident that no card holder has ever used."""
        return ints(self.pop.n_devices + self.code * ID_STRIDE + np.arange(k))

    def victims(self, k: int) -> Ints:
        """`k` random victim cards."""
        return ints(self.rng.integers(0, self.pop.n_cards, size=k))


def ips_in(rng: np.random.Generator, octet: Ints) -> Ints:
    """A random IPv4 address (as an integer) inside each first-octet block."""
    host = rng.integers(1 << 8, 1 << 16, size=octet.size) << 8 | rng.integers(1, 255, octet.size)
    return ints(octet << 24 | host)


def other_regions(rng: np.random.Generator, home: Ints, foreign_share: float) -> Ints:
    """A region different from `home` per row: foreign with `foreign_share`, else home-like."""
    foreign = rng.choice(cat.FOREIGN_REGIONS, size=home.size)
    shift = rng.integers(1, len(cat.HOME_REGIONS), size=home.size)
    home_pos = np.searchsorted(cat.HOME_REGIONS, home)
    elsewhere = cat.HOME_REGIONS[(home_pos + shift) % len(cat.HOME_REGIONS)]
    return ints(np.where(rng.random(home.size) < foreign_share, foreign, elsewhere))


def merchants_in(ctx: Context, region: Ints, online: Bools, mccs: tuple[str, ...]) -> Ints:
    """Per row, a merchant with one of `mccs`, online or in person, in `region` (-1: any).

    Falls back to any region, then to any merchant of the right kind, when none matches.
    """
    pop = ctx.pop
    wanted = cat.mcc_mask(pop.merchant_mcc, mccs)
    out = np.empty(region.size, dtype=np.int64)
    key = (region + 1) * 2 + online
    for group in np.unique(key):
        rows = np.flatnonzero(key == group)
        place, is_online = int(group) // 2 - 1, bool(group & 1)
        kind_ok = pop.merchant_online if is_online else pop.is_pos()
        fallback = kind_ok & wanted
        where = fallback if place < 0 else fallback & (pop.merchant_region == place)
        out[rows] = weighted_choice(ctx.rng, where, pop.merchant_popularity, rows.size, fallback)
    return ints(out)


def assemble(
    ctx: Context,
    *,
    time_us: Ints,
    card: Ints,
    merchant: Ints,
    amount: Floats,
    device: Ints,
    ip: Ints,
    auth_share: float,
    incident: Ints,
) -> Events:
    """Rows of a scenario; channel, location and 3-D Secure follow from the merchant.

    Device and IP are kept only for e-commerce rows, as for legitimate traffic.
    """
    pop = ctx.pop
    channel = ints(cat.KIND_CHANNEL[pop.merchant_kind[merchant]])
    present = cat.CHANNEL_CARD_PRESENT[channel]
    ecommerce = pop.merchant_kind[merchant] == cat.Kind.ONLINE
    authenticated = ecommerce & (ctx.rng.random(card.size) < auth_share)
    atm = pop.merchant_kind[merchant] == cat.Kind.ATM
    amount = np.where(atm, np.maximum(np.round(amount, -1), 20.0), np.round(amount, 2))
    return Events(
        time_us=time_us,
        card=card,
        merchant=merchant,
        amount=floats(np.clip(amount, 0.01, 50_000.0)),
        channel=channel,
        lat=np.where(present, np.round(pop.merchant_lat[merchant], 5), np.nan),
        lon=np.where(present, np.round(pop.merchant_lon[merchant], 5), np.nan),
        device=ints(np.where(ecommerce, device, NO_VALUE)),
        ip=ints(np.where(ecommerce, ip, NO_VALUE)),
        auth_3ds=authenticated.astype(np.float64),
        scenario=np.full(card.size, ctx.code, dtype=np.int64),
        incident=incident,
    )
