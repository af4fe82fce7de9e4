"""Endless streams of simulated payments for live runs (the CLI's `simulate` and `demo`).

`legit_transactions` yields normal traffic only; `live_transactions` yields the same mix
as `simulate`, fraud scenarios included. Both generate a chunk of simulated time at once
with the vectorised generators and then hand out validated `Transaction`s one by one.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime

import numpy as np

from fraudstream.contracts import Transaction
from fraudstream.simulator.config import SimulationConfig
from fraudstream.simulator.events import US_PER_S, Window, expected_share
from fraudstream.simulator.legit import legit_events
from fraudstream.simulator.simulate import generate
from fraudstream.simulator.tables import iter_transactions, transactions_table
from fraudstream.simulator.world import Population, make_population

__all__ = ["Population", "legit_transactions", "live_transactions", "make_population"]

CHUNK_EVENTS = 10_000  # legit stream: events generated at once
LIVE_EPOCH_EVENTS = 100_000  # live stream: events per epoch (fraud incidents fit in one)
MIN_LIVE_EPOCH_S = 600.0


def legit_transactions(
    population: Population, start: datetime, rate_per_s: float, seed: int, id_prefix: str = "tx"
) -> Iterator[Transaction]:
    """An endless, time-ordered stream of normal payments.

    The base rate `rate_per_s` is thinned by the hour-of-day rhythm (UTC), so nights are
    quieter than afternoons. Transaction ids are `<id_prefix>-<serial>`: give each run its
    own prefix.
    """
    rng = np.random.default_rng(seed)
    chunk_us = round(min(max(CHUNK_EVENTS / rate_per_s, 60.0), 3600.0) * US_PER_S)
    serial = 1
    for lo in itertools.count(_us(start), chunk_us):
        window = Window(lo, lo + chunk_us)
        expected = rate_per_s * chunk_us / US_PER_S * expected_share(window, phase=0)
        events = legit_events(population, rng, window, int(rng.poisson(expected)), None).sorted()
        yield from iter_transactions(transactions_table(events, population, id_prefix, serial))
        serial += len(events)


def live_transactions(
    config: SimulationConfig,
    start: datetime,
    rate_per_s: float,
    id_prefix: str,
    *,
    epoch_events: int = LIVE_EPOCH_EVENTS,
) -> Iterator[Transaction]:
    """An endless, time-ordered stream of payments with fraud, as configured in `config`.

    Simulated time advances at `rate_per_s` payments per second on average, in epochs of
    about `epoch_events` payments (ten minutes to a day); `config.n_transactions`,
    `days` and `start` are replaced per epoch, while the population, fraud rate, scenarios
    and drift (at its absolute time) apply. Incidents longer than an epoch are compressed
    to fit in it. Ground truth is not part of a `Transaction`; use `simulate` for it.
    """
    population = make_population(config.n_cards, config.n_merchants, config.seed)
    epoch_s = min(max(epoch_events / rate_per_s, MIN_LIVE_EPOCH_S), 86_400.0)
    epoch_us = round(epoch_s * US_PER_S)
    serial = 1
    for epoch, lo in enumerate(itertools.count(_us(start), epoch_us)):
        rng = np.random.default_rng([config.seed, 2, epoch])
        window = Window(lo, lo + epoch_us)
        events = generate(config, population, rng, window, max(1, round(rate_per_s * epoch_s)))
        yield from iter_transactions(transactions_table(events, population, id_prefix, serial))
        serial += len(events)


def _us(at: datetime) -> int:
    return round(at.timestamp() * US_PER_S)
