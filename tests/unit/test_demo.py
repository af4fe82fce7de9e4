"""The demo's replay sizing: every rate and duration must give a history the simulator accepts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fraudstream.demo import HISTORY_PER_DAY, replay_size, replay_window
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


def test_the_replay_ends_now_and_never_goes_back_before_an_earlier_demo() -> None:
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    assert replay_window(now, 2.0, None) == (now - timedelta(days=2), 2.0)
    long_ago = now - timedelta(days=30)
    assert replay_window(now, 2.0, long_ago) == (now - timedelta(days=2), 2.0)
    earlier_run = now - timedelta(hours=1)  # make run twice: the cards are at this time
    start, days = replay_window(now, 2.0, earlier_run)
    assert start == earlier_run
    assert start + timedelta(days=days) <= now + timedelta(days=1)  # none dead-lettered
    assert days == pytest.approx(1.0)
    ahead = now + timedelta(days=1)  # no room left: back to a window that ends now
    assert replay_window(now, 2.0, ahead) == (now - timedelta(days=2), 2.0)
