"""`simulate(config)`: a labelled, time-ordered history of payments as Arrow tables.

Legitimate traffic is generated in bulk first; each enabled fraud scenario then adds
its share of `fraud_rate` (the compromised-merchant scenario picks its victims among
the legitimate visits); rows are sorted by time and numbered; the late label stream is
derived from the ground truth last. The same config always gives identical tables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from fraudstream.simulator.compromise import compromised_merchant, compromised_terminal
from fraudstream.simulator.config import SCENARIO_CODE, Scenario, SimulationConfig
from fraudstream.simulator.events import US_PER_S, Events, Window
from fraudstream.simulator.incidents import Context
from fraudstream.simulator.labels import make_labels
from fraudstream.simulator.legit import legit_events
from fraudstream.simulator.scenarios import account_takeover, card_testing, high_amount, spree
from fraudstream.simulator.tables import transactions_table
from fraudstream.simulator.world import Population, make_population

BUILDERS: dict[Scenario, Callable[[Context, int], Events]] = {
    Scenario.SPREE: spree,
    Scenario.CARD_TESTING: card_testing,
    Scenario.COMPROMISED_MERCHANT: compromised_merchant,
    Scenario.ACCOUNT_TAKEOVER: account_takeover,
    Scenario.HIGH_AMOUNT: high_amount,
    Scenario.COMPROMISED_TERMINAL: compromised_terminal,
}


@dataclass(frozen=True)
class Simulation:
    """Transactions (contract columns + `is_fraud`, `scenario`) and the label stream."""

    config: SimulationConfig
    transactions: pa.Table  # sorted by event_time
    labels: pa.Table  # Label columns, sorted by labelled_at


def simulate(config: SimulationConfig) -> Simulation:
    """Generate the whole simulation described by `config` in memory."""
    population = make_population(config.n_cards, config.n_merchants, config.seed)
    rng = np.random.default_rng([config.seed, 1])
    window = Window(_us(config.start.timestamp()), _us(config.end.timestamp()))
    events = generate(config, population, rng, window, config.n_transactions)
    transactions = transactions_table(events, population, config.prefix, first_serial=1)
    labels = make_labels(transactions, events.incident, config.labels, rng)
    return Simulation(config, transactions, labels)


def generate(
    config: SimulationConfig,
    population: Population,
    rng: np.random.Generator,
    window: Window,
    n_transactions: int,
) -> Events:
    """About `n_transactions` payments in `window` (exactly, unless a tiny simulation
    leaves the compromised-merchant scenario without visits), sorted by time."""
    counts = config.fraud_counts(n_transactions)
    legit = legit_events(
        population, rng, window, n_transactions - sum(counts.values()), config.drift
    )
    parts = [legit]
    for scenario, count in counts.items():
        span = window
        if config.drift is not None and scenario in config.drift.new_scenarios:
            span = Window(max(window.lo, _us(config.drift.at.timestamp())), window.hi)
            if span.span <= 0:  # a live epoch before the drift: not yet
                continue
        context = Context(population, rng, span, SCENARIO_CODE[scenario], legit)
        parts.append(BUILDERS[scenario](context, count))
    return Events.concat(parts).sorted()


def _us(seconds: float) -> int:
    return round(seconds * US_PER_S)
