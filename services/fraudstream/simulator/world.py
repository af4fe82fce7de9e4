"""The simulated population: card holders, their devices and IPs, and merchants.

Card holders have a home location, a spending level, an activity level, a daily rhythm,
an online habit, 1-3 devices, two usual IPs and a few favourite shops. Merchants have an
MCC, a kind (shop, ATM, online, subscription), a location and a typical ticket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import numpy as np
from numpy.typing import NDArray

from fraudstream.simulator import catalog as cat
from fraudstream.simulator.events import Floats, Ints, floats, ints

N_FAVOURITES = 4
IN_PERSON = (cat.Kind.POS, cat.Kind.ATM)


@dataclass(frozen=True)
class Population:
    """Arrays describing cards and merchants, indexed by position."""

    card_region: Ints
    card_lat: Floats
    card_lon: Floats
    card_spend: Floats  # multiplies merchants' typical tickets
    card_activity: Floats  # relative payment frequency
    card_phase: Ints  # hours added to UTC to read the card's rhythm
    card_online_share: Floats
    card_devices: Ints  # 1-3 devices each
    card_device_start: Ints  # global id of each card's first device
    card_ips: Ints  # (n_cards, 2): home and mobile IPv4 as integers
    card_favourites: Ints  # (n_cards, N_FAVOURITES) merchants visited regularly
    merchant_mcc: NDArray[np.str_]
    merchant_kind: Ints  # catalog.Kind
    merchant_region: Ints
    merchant_online: NDArray[np.bool_]
    merchant_ticket: Floats
    merchant_lat: Floats
    merchant_lon: Floats
    merchant_popularity: Floats

    @property
    def n_cards(self) -> int:
        return len(self.card_region)

    @property
    def n_merchants(self) -> int:
        return len(self.merchant_mcc)

    @property
    def n_devices(self) -> int:
        """Devices owned by card holders; fraudsters' devices get ids above this."""
        return int(self.card_device_start[-1] + self.card_devices[-1])

    def is_pos(self) -> NDArray[np.bool_]:
        """Merchants where the card is present (shops and ATMs)."""
        return np.isin(self.merchant_kind, IN_PERSON)


def make_population(n_cards: int, n_merchants: int, seed: int) -> Population:
    """Draw cards and merchants reproducibly from `seed`."""
    rng = np.random.default_rng(seed)
    merchants = _merchants(rng, n_merchants)
    region = cat.HOME_REGIONS[rng.choice(len(cat.HOME_REGIONS), n_cards, p=cat.HOME_REGION_SHARE)]
    shift = rng.choice(cat.RHYTHM_SHIFTS, n_cards, p=cat.RHYTHM_SHIFT_ODDS)
    devices = rng.integers(1, 4, size=n_cards)
    octet = cat.REGION_IP_OCTET[region][:, None]
    host = rng.integers(1 << 8, 1 << 16, size=(n_cards, 2)) << 8 | rng.integers(
        1, 255, (n_cards, 2)
    )
    return Population(
        card_region=ints(region),
        card_lat=cat.REGION_LAT[region] + rng.normal(0, 0.08, n_cards),
        card_lon=cat.REGION_LON[region] + rng.normal(0, 0.08, n_cards),
        card_spend=rng.lognormal(0.0, 0.5, n_cards),
        card_activity=rng.lognormal(0.0, 0.8, n_cards),
        card_phase=ints(cat.REGION_UTC_OFFSET[region] - shift),
        card_online_share=rng.beta(2.0, 6.0, n_cards),
        card_devices=ints(devices),
        card_device_start=ints(np.cumsum(devices) - devices),
        card_ips=ints(octet << 24 | host),
        card_favourites=_favourites(rng, ints(region), merchants),
        **merchants,
    )


def _favourites(rng: np.random.Generator, region: Ints, merchants: _Merchants) -> Ints:
    """Per card, the in-person merchants of its home region it visits regularly."""
    favourites = np.zeros((region.size, N_FAVOURITES), dtype=np.int64)
    pos = np.isin(merchants["merchant_kind"], IN_PERSON)
    for home in np.unique(region):
        holders = np.flatnonzero(region == home)
        local = pos & (merchants["merchant_region"] == home)
        popularity = merchants["merchant_popularity"]
        picks = weighted_choice(rng, local, popularity, holders.size * N_FAVOURITES, pos)
        favourites[holders] = picks.reshape(-1, N_FAVOURITES)
    return favourites


class _Merchants(TypedDict):
    merchant_mcc: NDArray[np.str_]
    merchant_kind: Ints
    merchant_region: Ints
    merchant_online: NDArray[np.bool_]
    merchant_ticket: Floats
    merchant_lat: Floats
    merchant_lon: Floats
    merchant_popularity: Floats


def _merchants(rng: np.random.Generator, n: int) -> _Merchants:
    category = rng.choice(len(cat.CATEGORIES), size=n, p=cat.CATEGORY_SHARE)
    foreign = rng.random(n) < cat.FOREIGN_MERCHANT_SHARE
    region = np.where(
        foreign,
        rng.choice(cat.FOREIGN_REGIONS, size=n),
        rng.choice(cat.HOME_REGIONS, size=n, p=cat.HOME_REGION_SHARE),
    )
    kind = cat.CATEGORY_KIND[category]
    return _Merchants(
        merchant_mcc=cat.CATEGORY_MCC[category],
        merchant_kind=ints(kind),
        merchant_region=ints(region),
        merchant_online=np.isin(kind, [cat.Kind.ONLINE, cat.Kind.RECURRING]),
        merchant_ticket=floats(cat.CATEGORY_TICKET[category] * rng.lognormal(0.0, 0.3, n)),
        merchant_lat=floats(cat.REGION_LAT[region] + rng.normal(0, 0.08, n)),
        merchant_lon=floats(cat.REGION_LON[region] + rng.normal(0, 0.08, n)),
        merchant_popularity=floats(rng.lognormal(0.0, 1.0, n)),
    )


def weighted_choice(
    rng: np.random.Generator,
    mask: NDArray[np.bool_],
    weight: Floats,
    size: int,
    fallback: NDArray[np.bool_] | None = None,
) -> Ints:
    """`size` indices where `mask` holds, drawn in proportion to `weight`.

    An empty `mask` falls back to `fallback`, then to every index, so tiny populations
    (a region without shops) still work.
    """
    index = np.flatnonzero(mask)
    if index.size == 0 and fallback is not None:
        index = np.flatnonzero(fallback)
    if index.size == 0:
        index = np.arange(len(mask))
    cumulative = np.cumsum(weight[index])
    pick = np.searchsorted(cumulative, rng.random(size) * cumulative[-1], side="right")
    return ints(index[np.minimum(pick, index.size - 1)])
