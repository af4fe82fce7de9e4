"""Seeded simulation of card traffic, fraud and late labels for demos, tests and training.

`simulate(SimulationConfig(...))` returns Arrow tables of transactions (with ground
truth) and of the late label stream; `write` saves them as Parquet or JSONL;
`iter_transactions` turns rows back into validated contract messages; the streams in
`population` feed live runs. See README.md in this package for the scenarios.
"""

from __future__ import annotations

from fraudstream.simulator.config import (
    DriftConfig,
    LabelConfig,
    Scenario,
    ScenarioConfig,
    SimulationConfig,
    SimulatorError,
)
from fraudstream.simulator.files import Format, jsonl_lines, write
from fraudstream.simulator.population import legit_transactions, live_transactions
from fraudstream.simulator.simulate import Simulation, simulate
from fraudstream.simulator.tables import TRUTH_COLUMNS, iter_transactions
from fraudstream.simulator.world import Population, make_population

__all__ = [
    "TRUTH_COLUMNS",
    "DriftConfig",
    "Format",
    "LabelConfig",
    "Population",
    "Scenario",
    "ScenarioConfig",
    "Simulation",
    "SimulationConfig",
    "SimulatorError",
    "iter_transactions",
    "jsonl_lines",
    "legit_transactions",
    "live_transactions",
    "make_population",
    "simulate",
    "write",
]
