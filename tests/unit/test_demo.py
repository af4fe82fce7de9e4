"""The demo's replay sizing (every rate and duration must give a history the simulator
accepts) and the drift demo's world, loop log and trainer state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fraudstream.contracts import (
    Label,
    ModelEvent,
    ModelEventType,
    RetrainTrigger,
    Transaction,
    encode,
)
from fraudstream.demo import replay_events, replay_size, replay_window, with_labels
from fraudstream.demo_drift import (
    HISTORY_PER_DAY,
    DriftScenario,
    LoopLog,
    check_room,
    job_failures,
    trainer_line,
    trainer_state,
)
from fraudstream.errors import ConfigurationError, FraudStreamError
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


def test_the_drift_world_ends_now_drifts_inside_and_refuses_an_earlier_demos_cards() -> None:
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    scenario = DriftScenario()
    start = now - timedelta(days=scenario.days)
    world = scenario.world(start, "drift1")
    assert world.end == now
    assert world.drift is not None
    assert world.drift.at == start + timedelta(days=scenario.drift_day)
    assert scenario.monitor_day < scenario.drift_day < scenario.days
    assert world.n_transactions / world.days == HISTORY_PER_DAY  # the first model's density
    check_room(start, scenario.days, None)
    check_room(start, scenario.days, start - timedelta(hours=1))
    with pytest.raises(ConfigurationError, match="make clean"):
        check_room(start, scenario.days, start + timedelta(days=1))


def test_the_loop_log_prints_each_step_and_knows_the_challengers_fate(tmp_path: Path) -> None:
    lines: list[str] = []
    log = LoopLog(lines.append, tmp_path / "models", wait_days=4.0, when=lambda: "day 15/42")
    at = datetime(2026, 12, 1, tzinfo=UTC)
    trigger = RetrainTrigger(
        trigger_id="t1", model_name="fraud", model_version="v1", detector="feature_psi",
        feature="amount_log", statistic="psi", value=0.61, threshold=0.25,
        window_start=at, window_end=at, triggered_at=at,
    )  # fmt: skip
    log.on_trigger(encode(trigger))
    log.on_trigger(b"not json")  # not ours to judge: ignored
    assert lines == [
        "loop (day 15/42): drift trigger from feature_psi on amount_log: psi 0.61 "
        "against 0.25 (v1); the trainer waits for 4 days of mature data after it"
    ]

    def event(version: str, kind: ModelEventType, note: str = "") -> bytes:
        return encode(ModelEvent(model_name="fraud", version=version, event=kind,
                                 actor="trainer", at=at, note=note))  # fmt: skip

    log.on_model_event(event("v2", ModelEventType.REGISTERED, "t1"))
    log.on_model_event(event("v1", ModelEventType.RETIRED))  # the old champion: not the fate
    assert log.decided is None
    log.on_model_event(event("v2", ModelEventType.RETIRED, "canary test at 95%: failed"))
    assert log.decided == "retired"
    assert lines[-1] == "loop (day 15/42): retired v2 (trainer): canary test at 95%: failed"


def test_the_trainer_state_comes_from_its_gauges() -> None:
    def metrics(running: int, waiting: int) -> str:
        return (
            f"# TYPE fraud_trainer_running gauge\nfraud_trainer_running {running}\n"
            f"# TYPE fraud_trainer_waiting gauge\nfraud_trainer_waiting {waiting}\n"
        )

    assert trainer_state(metrics(0, 0)) == "idle"
    assert trainer_state(metrics(0, 1)) == "waiting for data"
    assert trainer_state(metrics(1, 0)) == "training"
    assert trainer_line(lambda: metrics(1, 0)) == "trainer training"

    def unreachable() -> str:
        raise FraudStreamError("connection refused")

    assert trainer_line(unreachable) == "trainer starting"


def test_a_shortened_replay_keeps_the_first_models_density() -> None:
    lines: list[str] = []
    earlier = datetime.now(UTC) - timedelta(days=2)  # a drift demo ended two days ago
    events, _labels = replay_events(200, 0, lines.append, earlier)
    txs = list(events)
    span_days = (txs[-1].event_time - txs[0].event_time) / timedelta(days=1)
    assert txs[0].event_time >= earlier
    assert len(txs) / span_days == pytest.approx(HISTORY_PER_DAY, rel=0.1)
    assert "make clean" in lines[0]


def test_the_trainers_failed_and_skipped_jobs_are_found_in_its_log() -> None:
    log = (
        "2026-12-03 15:25:56 INFO fraudstream.retrain.job: features and training on 39,695 rows\n"
        "2026-12-03 15:26:00 ERROR __main__: retrain for drift-f5 failed: the validation window "
        "has 2 frauds\n"
        "2026-12-03 15:27:00 WARNING __main__: retrain skipped: 3 labelled frauds\n"
        "2026-12-03 15:28:00 WARNING __main__: commit of [] failed: rebalance\n"
    )
    assert job_failures(log) == ["the validation window has 2 frauds", "3 labelled frauds"]
