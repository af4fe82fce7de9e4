"""Drift detection on the simulator: delay and false alarms per detector, and the
monitor core's throughput.

Each line is one 70-day simulation (seed 5, 420,000 payments): a small model trains on
days 20-32, and the monitor (`drift.offline.simulated_run`, default `config/drift.yaml`)
gets every decision and label after day 32. The drifts start on day 55. Per detector:
the decisions between the change and its first alarm ("delay"), and its alarms before
the change ("false"). The stationary line has no change: all its alarms are false.
About 35 s per line on 2 cores.

    python load_tests/bench_drift.py [--only stationary amount_x2 ...]
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta
from pathlib import Path

from fraudstream.drift.config import MonitorConfig
from fraudstream.drift.monitor import Monitor
from fraudstream.drift.offline import SimulatedRun, simulated_run
from fraudstream.features.spec import FeatureConfig
from fraudstream.model.train_config import LightGBMParams, TrainConfig
from fraudstream.simulator import DriftConfig, SimulationConfig

REPO = Path(__file__).resolve().parents[1]
WORLD = {"seed": 5, "days": 70.0, "n_transactions": 420_000, "n_cards": 8_000,
         "n_merchants": 800}  # fmt: skip
AT = SimulationConfig(**WORLD).start + timedelta(days=55)
DRIFTS: dict[str, DriftConfig | None] = {
    "stationary": None,
    "amount_x2": DriftConfig(at=AT, amount_multiplier=2.0),
    "amount_x1.5": DriftConfig(at=AT, amount_multiplier=1.5),
    "online_x2": DriftConfig(at=AT, online_share_multiplier=2.0),
    "electronics_x5": DriftConfig(at=AT, mcc_weight_multipliers={"5732": 5.0, "5944": 5.0}),
}


def _line(name: str, run: SimulatedRun, seconds: float) -> None:
    change = run.change_at
    first: dict[str, int] = {}
    false: dict[str, int] = {}
    for fired in run.fired:
        if fired.alarm is None:
            continue
        key = fired.alarm.key
        if change is None or fired.decisions <= change:
            false[key] = false.get(key, 0) + 1
        else:
            first.setdefault(key, fired.decisions - change)
    trigger = run.first_trigger()
    when = "none"
    if trigger is not None and trigger.trigger is not None:
        late = trigger.decisions - (change or 0)
        when = f"{trigger.trigger.detector} {trigger.trigger.feature or ''} after {late:,}"
    delays = ", ".join(f"{k} {v:,}" for k, v in sorted(first.items(), key=lambda kv: kv[1]))
    falses = ", ".join(f"{k} {v}" for k, v in sorted(false.items()))
    print(f"| {name} | {run.decisions:,} | {when} | {delays or '-'} | {falses or '-'} "
          f"| {seconds:.0f} s |", flush=True)  # fmt: skip


def _throughput(run: SimulatedRun) -> float:
    """Decisions per second through a fresh monitor core (join, detectors, debounce)."""
    replay = Monitor(MonitorConfig(), lambda _version: run.reference)
    started = time.perf_counter()
    for start in range(0, len(run.observed), 500):
        replay.on_decisions(run.observed[start : start + 500])
    return len(run.observed) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", choices=list(DRIFTS), default=list(DRIFTS))
    args = parser.parse_args()
    features = FeatureConfig.from_yaml(REPO / "config" / "features.yaml")
    training = TrainConfig(seed=1, lightgbm=LightGBMParams(num_boost_round=60, num_leaves=15))
    print(
        "| simulation | decisions | first trigger (decisions after the change) "
        "| first alarm per detector after the change | alarms before it | time |"
    )
    print("|---|---|---|---|---|---|")
    last = None
    for name in args.only:
        started = time.perf_counter()
        run = simulated_run(SimulationConfig(**WORLD, drift=DRIFTS[name]), features,
                            train_days=(20.0, 32.0), training=training)  # fmt: skip
        _line(name, run, time.perf_counter() - started)
        last = run
    if last is not None:
        print(f"\nmonitor core: {_throughput(last):,.0f} decisions/s (batches of 500, one core)")


if __name__ == "__main__":
    main()
