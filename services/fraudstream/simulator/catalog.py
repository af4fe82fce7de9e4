"""Static reference data of the simulated world: merchant categories, regions, daily rhythm.

Everything here is a plain table turned into numpy arrays once, so the generators can
index it with arrays of codes instead of looking things up per event.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

from fraudstream.contracts import Channel


class Kind(IntEnum):
    """How a merchant takes payments; decides channel, card presence and device/IP."""

    POS = 0
    ATM = 1
    ONLINE = 2
    RECURRING = 3


# (mcc, typical ticket in EUR, share of merchants, kind)
CATEGORIES: tuple[tuple[str, float, float, Kind], ...] = (
    ("5411", 45.0, 0.22, Kind.POS),  # grocery
    ("5812", 30.0, 0.12, Kind.POS),  # restaurants
    ("5814", 9.0, 0.08, Kind.POS),  # fast food
    ("5541", 55.0, 0.07, Kind.POS),  # fuel
    ("5311", 80.0, 0.06, Kind.POS),  # department stores
    ("5691", 70.0, 0.05, Kind.POS),  # clothing
    ("5732", 250.0, 0.03, Kind.POS),  # electronics stores
    ("5944", 400.0, 0.01, Kind.POS),  # jewellery
    ("6011", 120.0, 0.04, Kind.ATM),  # ATM cash
    ("4121", 18.0, 0.04, Kind.ONLINE),  # ride sharing
    ("5999", 60.0, 0.07, Kind.ONLINE),  # miscellaneous online retail
    ("5815", 12.0, 0.04, Kind.ONLINE),  # digital goods
    ("4511", 320.0, 0.02, Kind.ONLINE),  # airlines
    ("7011", 180.0, 0.02, Kind.ONLINE),  # hotels
    ("8398", 25.0, 0.01, Kind.ONLINE),  # charities (a classic card-testing target)
    ("7995", 40.0, 0.01, Kind.ONLINE),  # gambling
    ("4814", 35.0, 0.04, Kind.RECURRING),  # telecom
    ("4899", 14.0, 0.03, Kind.RECURRING),  # streaming and cable
)
CATEGORY_MCC = np.array([c[0] for c in CATEGORIES])
CATEGORY_TICKET = np.array([c[1] for c in CATEGORIES])
CATEGORY_SHARE = np.array([c[2] for c in CATEGORIES]) / sum(c[2] for c in CATEGORIES)
CATEGORY_KIND = np.array([int(c[3]) for c in CATEGORIES])

# MCCs fraudsters favour for resale value or easy cash-out.
HIGH_VALUE_POS_MCCS = ("5732", "5944", "5311", "5691", "6011")
HIGH_VALUE_ONLINE_MCCS = ("5999", "4511", "7011", "5815")
CARD_TESTING_MCCS = ("8398", "5815", "5999")

# (country, latitude, longitude, UTC offset in hours, first octet of its IP block, home?)
# Card holders live in eurozone home regions (amounts are EUR); merchants in foreign
# regions serve travellers and fraudsters' cash-out.
REGIONS: tuple[tuple[str, float, float, int, int, bool], ...] = (
    ("DE", 52.52, 13.40, 1, 84, True),
    ("FR", 48.86, 2.35, 1, 90, True),
    ("IT", 41.90, 12.50, 1, 93, True),
    ("ES", 40.42, -3.70, 1, 88, True),
    ("NL", 52.37, 4.90, 1, 145, True),
    ("BE", 50.85, 4.35, 1, 81, True),
    ("AT", 48.21, 16.37, 1, 77, True),
    ("PT", 38.72, -9.14, 0, 94, True),
    ("IE", 53.35, -6.26, 0, 86, True),
    ("GR", 37.98, 23.73, 2, 79, True),
    ("US", 40.71, -74.01, -5, 23, False),
    ("GB", 51.51, -0.13, 0, 51, False),
    ("BR", -23.55, -46.63, -3, 177, False),
    ("NG", 6.52, 3.38, 1, 102, False),
    ("TH", 13.76, 100.50, 7, 110, False),
    ("AE", 25.20, 55.27, 4, 5, False),
)
REGION_COUNTRY = np.array([r[0] for r in REGIONS])
REGION_LAT = np.array([r[1] for r in REGIONS])
REGION_LON = np.array([r[2] for r in REGIONS])
REGION_UTC_OFFSET = np.array([r[3] for r in REGIONS])
REGION_IP_OCTET = np.array([r[4] for r in REGIONS])
HOME_REGIONS = np.flatnonzero([r[5] for r in REGIONS])
FOREIGN_REGIONS = np.flatnonzero([not r[5] for r in REGIONS])
# Share of card holders per home region, in HOME_REGIONS order.
HOME_REGION_SHARE = np.array([0.25, 0.2, 0.15, 0.12, 0.08, 0.05, 0.05, 0.04, 0.03, 0.03])
# Share of merchants located in foreign regions.
FOREIGN_MERCHANT_SHARE = 0.08
# First octet of the anonymising proxies and hosting ranges card testers use.
PROXY_IP_OCTET = 185

# Channels by code; the code is what the generators store.
CHANNELS: tuple[Channel, ...] = tuple(Channel)
CHANNEL_CODE = {channel: code for code, channel in enumerate(CHANNELS)}
CHANNEL_CARD_PRESENT = np.array([c in (Channel.POS, Channel.ATM) for c in CHANNELS])
KIND_CHANNEL = np.array(
    [
        CHANNEL_CODE[Channel.POS],
        CHANNEL_CODE[Channel.ATM],
        CHANNEL_CODE[Channel.ECOMMERCE],
        CHANNEL_CODE[Channel.RECURRING],
    ]
)
# Share of online orders taken by mail or phone (no device, no 3-D Secure).
MOTO_SHARE = 0.02
# Share of legitimate e-commerce payments authenticated with 3-D Secure.
LEGIT_3DS_SHARE = 0.85

# Relative payment intensity by local hour of day: quiet nights, busy afternoons.
HOURLY_RHYTHM: NDArray[np.float64] = np.array(
    [1, 0.5, 0.3, 0.3, 0.4, 0.8, 2, 4, 5, 5, 6, 7, 8, 7, 6, 6, 7, 8, 8, 7, 5, 4, 3, 2],
    dtype=np.float64,
)
# Per-card shift of that rhythm in hours (early birds to night owls) and its odds.
RHYTHM_SHIFTS = np.array([-2, -1, 0, 1, 2, 3])
RHYTHM_SHIFT_ODDS = np.array([0.05, 0.15, 0.5, 0.15, 0.1, 0.05])


def mcc_mask(mccs: NDArray[np.str_], wanted: tuple[str, ...]) -> NDArray[np.bool_]:
    """True where the MCC is one of `wanted`."""
    return np.isin(mccs, np.array(wanted))
