"""The demo's replay sizing: every rate and duration must give a history the simulator accepts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fraudstream.contracts import Label, Transaction
from fraudstream.demo import HISTORY_PER_DAY, replay_events, replay_size, replay_window, with_labels
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


def test_labels_go_out_once_the_replay_reaches_the_time_they_were_given() -> None:
    events, labels = replay_events(400, 10, say=lambda _text: None)
    txs = list(events)
    assert labels == sorted(labels, key=lambda label: label.labelled_at)
    sent: list[tuple[int, Label]] = []  # (payments yielded before it, label)
    replayed: list[Transaction] = []
    for tx in with_labels(iter(txs), labels, lambda label: sent.append((len(replayed), label))):
        replayed.append(tx)
    assert replayed == txs
    last = txs[-1].event_time
    assert [label for _, label in sent] == [lb for lb in labels if lb.labelled_at <= last]
    assert sent  # some labels fall inside the replay
    for before, label in sent:  # not early: the next payment is at or after the label
        assert txs[before].event_time >= label.labelled_at
        assert before == 0 or txs[before - 1].event_time < label.labelled_at
