"""Compromised merchants: a skimmed terminal leaks the cards that pay at it, or a
compromised terminal charges stolen cards itself.

For a few days (up to a quarter of the simulated span) a skimmer sits on a busy shop or
ATM. Some of the cards that paid there in that window are cloned and used later: one to
four payments each, from an hour to thirty days after the visit, as counterfeit cards in
person in another region (60 %) or online from a fraudster's device (40 %). Fraud cards
therefore share a merchant they visited before the fraud: the common point of purchase
investigators look for.
"""

from __future__ import annotations

import math

import numpy as np

from fraudstream.simulator import catalog as cat
from fraudstream.simulator.events import (
    US_PER_DAY,
    US_PER_HOUR,
    US_PER_S,
    Events,
    Ints,
    Window,
    floats,
    ints,
    segment_offsets,
)
from fraudstream.simulator.incidents import Context, assemble, ips_in, merchants_in, other_regions

VICTIMS_PER_MERCHANT = 150
MAX_DELAY_US = 30 * US_PER_DAY


def compromised_merchant(ctx: Context, n: int) -> Events:
    """`n` fraudulent payments on cards skimmed at compromised merchants (fewer if the
    window saw no visits at all, which only happens with tiny simulations)."""
    if n <= 0:
        return ctx.legit.take(ints([]))
    rng = ctx.rng
    planned = max(1, round(n / 2.5))
    visit_card, visit_time = _skimmed_visits(ctx, math.ceil(planned / VICTIMS_PER_MERCHANT))
    if visit_card.size == 0:
        return ctx.legit.take(ints([]))
    chosen = rng.choice(visit_card.size, size=min(planned, visit_card.size), replace=False)
    card, visit = visit_card[chosen], visit_time[chosen]
    sizes = ints(1 + rng.multinomial(n - card.size, np.full(card.size, 1 / card.size)))
    times = _fraud_times(ctx, visit, sizes)
    rows = int(sizes.sum())
    online = rng.random(rows) < 0.4
    region = other_regions(rng, np.repeat(ctx.pop.card_region[card], sizes), 0.5)
    mccs = cat.HIGH_VALUE_POS_MCCS + cat.HIGH_VALUE_ONLINE_MCCS
    merchant = merchants_in(ctx, region, online, mccs)
    amount = ctx.pop.merchant_ticket[merchant] * rng.lognormal(0.2, 0.5, rows)
    ip = ips_in(rng, ints(cat.REGION_IP_OCTET[rng.choice(cat.FOREIGN_REGIONS, card.size)]))
    return assemble(
        ctx,
        time_us=times,
        card=np.repeat(card, sizes),
        merchant=merchant,
        amount=floats(amount),
        device=np.repeat(ctx.fresh_devices(card.size), sizes),
        ip=np.repeat(ip, sizes),
        auth_share=0.15,
        incident=np.repeat(ctx.incidents(card.size), sizes),
    )


def _skimmed_visits(ctx: Context, n_merchants: int) -> tuple[Ints, Ints]:
    """Cards (and their first visit time) that paid in person at the compromised merchants.

    The compromise window starts in the first half of the scenario's span and lasts ~5
    days (at most a quarter of the span); merchants are drawn by how busy they were then.
    """
    rng, window, legit = ctx.rng, ctx.window, ctx.legit
    length = min(rng.lognormal(np.log(5.0), 0.4) * US_PER_DAY, 0.25 * window.span)
    lo = window.lo + int(rng.random() * 0.5 * window.span)
    compromise = Window(lo, int(lo + length))
    in_person = cat.CHANNEL_CARD_PRESENT[legit.channel]
    seen = (legit.time_us >= compromise.lo) & (legit.time_us < compromise.hi) & in_person
    busy = np.bincount(legit.merchant[seen], minlength=ctx.pop.n_merchants).astype(np.float64)
    if busy.sum() == 0:
        return ints([]), ints([])
    count = min(n_merchants, int(np.count_nonzero(busy)))
    merchants = rng.choice(busy.size, size=count, replace=False, p=busy / busy.sum())
    visits = np.flatnonzero(seen & np.isin(legit.merchant, merchants))
    visits = visits[np.argsort(legit.time_us[visits], kind="stable")]
    cards, first = np.unique(legit.card[visits], return_index=True)
    return ints(cards), ints(legit.time_us[visits[first]])


def _fraud_times(ctx: Context, visit: Ints, sizes: Ints) -> Ints:
    """Times of each victim's fraud: starting 1 h to 30 days after the visit, hours apart,
    compressed when needed so every payment stays inside the scenario's span."""
    rng, hi = ctx.rng, ctx.window.hi
    room = np.minimum(MAX_DELAY_US, hi - visit)
    start = visit + np.minimum(US_PER_HOUR, 0.05 * room) + rng.random(visit.size) * room * 0.5
    offsets = segment_offsets(rng.lognormal(np.log(3 * 3600.0), 1.0, int(sizes.sum())), sizes)
    left = np.repeat((hi - start) * 0.9 / US_PER_S, sizes)
    duration = np.repeat(np.maximum.reduceat(offsets, np.cumsum(sizes) - sizes), sizes)
    scale = np.minimum(1.0, left / np.maximum(duration, 1.0))
    return ints((np.repeat(start, sizes) + offsets * scale * US_PER_S) // 1000 * 1000)


TERMINAL_FRAUDS = 40  # fraudulent payments per compromised terminal, on average


def compromised_terminal(ctx: Context, n: int) -> Events:
    """A terminal that itself takes fraud: for 5-14 days a busy shop's terminal (hacked,
    or a colluding merchant) charges stolen cards at its usual ticket, one payment per
    card, from the holders' own devices and IPs when online. Unlike the skimmer, the fraud
    sits on the merchant itself: what the Fraud Detection Handbook's terminal scenario,
    and delay-aligned merchant label risk, are about."""
    if n <= 0:
        return ctx.legit.take(ints([]))
    rng, window, pop = ctx.rng, ctx.window, ctx.pop
    busy = np.bincount(ctx.legit.merchant, minlength=pop.n_merchants).astype(np.float64)
    if busy.sum() == 0:
        return ctx.legit.take(ints([]))
    k = min(max(1, round(n / TERMINAL_FRAUDS)), int(np.count_nonzero(busy)))
    terminals = rng.choice(busy.size, size=k, replace=False, p=busy / busy.sum())
    length = np.minimum(rng.uniform(5.0, 14.0, k) * US_PER_DAY, 0.5 * window.span)
    start = window.lo + rng.random(k) * (window.span - length)
    which = rng.integers(0, k, n)
    times = ints((start[which] + rng.random(n) * length[which]).astype(np.int64))
    merchant = ints(terminals[which])
    card = ctx.victims(n)
    amount = pop.merchant_ticket[merchant] * rng.lognormal(0.3, 0.5, n)
    device = pop.card_device_start[card] + (rng.random(n) * pop.card_devices[card])
    return assemble(
        ctx, time_us=times, card=card, merchant=merchant, amount=floats(amount),
        device=ints(device), ip=ints(pop.card_ips[card, 0]), auth_share=0.3,
        incident=ctx.incidents(n),
    )  # fmt: skip
