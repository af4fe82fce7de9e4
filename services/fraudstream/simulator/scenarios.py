"""Fraud scenarios that need only a victim card: spree, card testing, takeover, outlier.

Each builder returns exactly `n` fraudulent rows grouped in incidents (one victim card
each), vectorised over all rows. The compromised-merchant scenario builds on legitimate
visits and lives in `compromise.py`.
"""

from __future__ import annotations

import numpy as np

from fraudstream.simulator import catalog as cat
from fraudstream.simulator.events import (
    Events,
    Floats,
    Ints,
    floats,
    ints,
    place_incidents,
    segment_offsets,
    segment_sizes,
)
from fraudstream.simulator.incidents import Context, assemble, ips_in, merchants_in, other_regions


def spree(ctx: Context, n: int) -> Events:
    """Stolen card: 5-20 purchases about ten minutes apart, within a few hours.

    The thief buys resellable goods and cash (electronics, jewellery, department stores,
    ATMs), in person with the physical card and sometimes online from his own device;
    60 % of sprees happen away from the holder's home region, half of those abroad.
    """
    rng = ctx.rng
    sizes = segment_sizes(rng, n, 5, 20)
    card = ctx.victims(sizes.size)
    home = ctx.pop.card_region[card]
    region = np.where(rng.random(sizes.size) < 0.6, other_regions(rng, home, 0.5), home)
    online = rng.random(n) < 0.2
    mccs = cat.HIGH_VALUE_POS_MCCS + cat.HIGH_VALUE_ONLINE_MCCS
    merchant = merchants_in(ctx, np.repeat(region, sizes), online, mccs)
    gaps = rng.lognormal(np.log(600.0), 0.8, n)
    amount = ctx.pop.merchant_ticket[merchant] * rng.lognormal(0.3, 0.5, n)
    octet = ints(cat.REGION_IP_OCTET[region])
    return _incident_rows(
        ctx, sizes=sizes, card=card, merchant=merchant, amount=amount, gaps=gaps, ip_octet=octet,
        auth_share=0.2,
    )  # fmt: skip


def card_testing(ctx: Context, n: int) -> Events:
    """Harvested card number checked with tiny payments, then cashed out online.

    A bot makes 3-10 probes under 2 EUR about 40 s apart at online charities, digital
    goods and webshops; after about half an hour, 1-3 large online purchases follow. All
    from a fresh device behind a proxy IP, almost never 3-D Secure authenticated.
    """
    rng = ctx.rng
    sizes = segment_sizes(rng, n, 4, 13)
    big_count = np.minimum(rng.integers(1, 4, size=sizes.size), sizes - 1)
    position = np.arange(n) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    big = position >= np.repeat(sizes - big_count, sizes)
    first_big = big & (position == np.repeat(sizes - big_count, sizes))
    gaps = np.where(big, rng.lognormal(np.log(600.0), 0.5, n), rng.lognormal(np.log(40.0), 0.6, n))
    gaps = np.where(first_big, rng.lognormal(np.log(1800.0), 0.7, n), gaps)
    merchant = np.empty(n, dtype=np.int64)
    for rows, mccs in ((big, cat.HIGH_VALUE_ONLINE_MCCS), (~big, cat.CARD_TESTING_MCCS)):
        anywhere = ints(np.full(int(rows.sum()), -1))
        merchant[rows] = merchants_in(ctx, anywhere, np.ones(anywhere.size, bool), mccs)
    probe = np.where(rng.random(n) < 0.3, 1.0, rng.uniform(0.10, 1.99, n))
    amount = np.where(big, np.exp(rng.uniform(np.log(150), np.log(1500), n)), probe)
    proxy = ints(np.full(sizes.size, cat.PROXY_IP_OCTET))
    card = ctx.victims(sizes.size)
    return _incident_rows(
        ctx, sizes=sizes, card=card, merchant=ints(merchant), amount=floats(amount), gaps=gaps,
        ip_octet=proxy, auth_share=0.05,
    )  # fmt: skip


def account_takeover(ctx: Context, n: int) -> Events:
    """Online account taken over: new device, new IP far away, then high amounts.

    2-6 online purchases about twenty minutes apart from a device and an IP the card
    holder never used, located in a foreign region (a jump from the holder's home); the
    first purchase is modest, the rest are several times the holder's usual ticket.
    """
    rng = ctx.rng
    sizes = segment_sizes(rng, n, 2, 6)
    card = ctx.victims(sizes.size)
    region = ints(rng.choice(cat.FOREIGN_REGIONS, size=sizes.size))
    merchant = merchants_in(
        ctx, np.repeat(region, sizes), np.ones(n, bool), cat.HIGH_VALUE_ONLINE_MCCS
    )
    first = np.repeat(np.cumsum(sizes) - sizes, sizes) == np.arange(n)
    factor = np.where(first, rng.lognormal(0.0, 0.3, n), rng.lognormal(np.log(4.0), 0.4, n))
    amount = ctx.pop.merchant_ticket[merchant] * np.repeat(ctx.pop.card_spend[card], sizes)
    amount = np.where(first, amount * factor, np.maximum(amount * factor, 150.0))
    gaps = rng.lognormal(np.log(1200.0), 0.8, n)
    octet = ints(cat.REGION_IP_OCTET[region])
    return _incident_rows(
        ctx, sizes=sizes, card=card, merchant=merchant, amount=floats(amount), gaps=gaps,
        ip_octet=octet, auth_share=0.4,
    )  # fmt: skip


def high_amount(ctx: Context, n: int) -> Events:
    """One payment far above the card's habits, from the holder's own device and IP.

    Jewellery, electronics or airline tickets for 15-50x the holder's usual ticket (at
    least 1,000 EUR), in the home region or online: only the amount gives it away.
    """
    rng = ctx.rng
    card = ctx.victims(n)
    online = rng.random(n) < 0.5
    region = ctx.pop.card_region[card]
    merchant = merchants_in(ctx, region, online, ("5732", "5944", "4511"))
    spend = ctx.pop.card_spend[card] * ctx.pop.merchant_ticket[merchant]
    amount = np.clip(spend * rng.lognormal(np.log(25.0), 0.4, n), 1000.0, 25_000.0)
    device = ctx.pop.card_device_start[card] + (rng.random(n) * ctx.pop.card_devices[card])
    ip = ctx.pop.card_ips[card, 0]
    times = place_incidents(rng, ctx.window, ints(np.ones(n)), floats(np.zeros(n)))
    return assemble(
        ctx, time_us=times, card=card, merchant=merchant, amount=floats(amount),
        device=ints(device), ip=ip, auth_share=0.5, incident=ctx.incidents(n),
    )  # fmt: skip


def _incident_rows(
    ctx: Context,
    *,
    sizes: Ints,
    card: Ints,
    merchant: Ints,
    amount: Floats,
    gaps: Floats,
    ip_octet: Ints,
    auth_share: float,
) -> Events:
    """Rows of incidents with per-incident card, fresh device and IP (in `ip_octet`'s block)."""
    offsets = segment_offsets(gaps, sizes)
    times = place_incidents(ctx.rng, ctx.window, sizes, offsets)
    ip = ips_in(ctx.rng, ip_octet)
    incident = ctx.incidents(sizes.size)
    return assemble(
        ctx,
        time_us=times,
        card=np.repeat(card, sizes),
        merchant=merchant,
        amount=amount,
        device=np.repeat(ctx.fresh_devices(sizes.size), sizes),
        ip=np.repeat(ip, sizes),
        auth_share=auth_share,
        incident=np.repeat(incident, sizes),
    )
