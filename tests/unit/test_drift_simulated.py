"""The monitor on the seeded simulator: silent on a stationary stream of 200,000+
decisions, and a trigger within a bounded number of decisions after a drift begins.

Both runs train a small model on days 20-32 of a 70-day simulation (features warmed up on
the days before) and feed the monitor every decision and label after day 32. The drift
doubles legitimate amounts from day 55.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fraudstream.drift.offline import SimulatedRun, simulated_run
from fraudstream.features.spec import FeatureConfig
from fraudstream.model.train_config import LightGBMParams, TrainConfig
from fraudstream.simulator import DriftConfig, SimulationConfig

REPO = Path(__file__).resolve().parents[2]
WORLD = {"seed": 5, "days": 70, "n_transactions": 420_000, "n_cards": 8_000,
         "n_merchants": 800}  # fmt: skip
START = SimulationConfig(**WORLD).start
DETECTION_BOUND = 25_000  # decisions after the change point (seen: 17,040)


def _run(drift: DriftConfig | None) -> SimulatedRun:
    return simulated_run(
        SimulationConfig(**WORLD, drift=drift),
        FeatureConfig.from_yaml(REPO / "config" / "features.yaml"),
        train_days=(20.0, 32.0),
        training=TrainConfig(seed=1, lightgbm=LightGBMParams(num_boost_round=60, num_leaves=15)),
    )


def test_the_monitor_stays_silent_on_a_stationary_stream() -> None:
    run = _run(None)
    assert run.decisions >= 200_000
    assert run.first_trigger() is None, run.first_trigger()
    # Single detectors may alarm (a fraud burst raises the decline rate); few do.
    assert len(run.alarms()) <= 5, [a.key for a in run.alarms()]


def test_the_monitor_triggers_soon_after_amounts_double() -> None:
    run = _run(DriftConfig(at=START + timedelta(days=55), amount_multiplier=2.0))
    assert run.change_at is not None
    first = run.first_trigger()
    assert first is not None
    assert first.trigger is not None
    assert run.change_at < first.decisions <= run.change_at + DETECTION_BOUND
    assert first.trigger.detector == "feature_psi"
    assert "feature_psi.amount_log.psi" in first.trigger.evidence
