"""The demo's replay sizing: every rate and duration must give a history the simulator accepts."""

from __future__ import annotations

import pytest

from fraudstream.demo import HISTORY_PER_DAY, replay_size
from fraudstream.simulator import SimulationConfig


@pytest.mark.parametrize(
    ("rate", "duration"), [(200.0, 0.0), (100_000.0, 3600.0), (200.0, 60.0), (0.1, 1.0)]
)
def test_replay_size_is_a_valid_simulation(rate: float, duration: float) -> None:
    count, days = replay_size(rate, duration)
    config = SimulationConfig(seed=7, n_transactions=count, days=days)
    assert config.days == days
    if duration and 100 <= rate * duration <= count:
        assert count == int(rate * duration)
    assert days == max(count / HISTORY_PER_DAY, 1.0)
