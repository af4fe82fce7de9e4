"""The monitor fed offline: scored history in, what it would have raised out.

For the detector tests and `load_tests/bench_drift.py`: decisions and labels of a
labelled history are interleaved by time (a label reaches the monitor at its
`labelled_at`) and fed in batches, as the service would receive them. `simulated_run`
does it end to end on the simulator: one history, a model trained on a window of it
(warmed up on the days before), and the monitor on everything after the window. Training
side only (it trains): the monitor service never imports this module.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np

from fraudstream.contracts import Label, RetrainTrigger, Verdict
from fraudstream.drift.config import MonitorConfig
from fraudstream.drift.detectors import Alarm
from fraudstream.drift.join import Seen
from fraudstream.drift.monitor import Monitor, Observed
from fraudstream.features.spec import FeatureConfig
from fraudstream.model.drift_reference import DriftReference
from fraudstream.model.ensemble import action_codes
from fraudstream.model.train_config import TrainConfig
from fraudstream.simulator import SimulationConfig
from fraudstream.trainer import TrainWindow, simulated_history, training_data
from fraudstream.training.train import train


def observed(
    ids: Sequence[str], times: np.ndarray, scores: np.ndarray, actions: np.ndarray, *,
    version: str, features: dict[str, np.ndarray],
) -> list[Observed]:  # fmt: skip
    """Decisions as the monitor sees them: `times` epoch seconds, `actions` codes, and the
    monitored `features` (name -> column of values, NaN for missing)."""
    names = list(features)
    columns = np.column_stack([features[n] for n in names]) if names else None
    out = []
    for i, txid in enumerate(ids):
        values = {}
        if columns is not None:
            row = zip(names, columns[i].tolist(), strict=True)
            values = {n: v for n, v in row if not math.isnan(v)}
        seen = Seen(txid, float(times[i]), version, float(scores[i]), int(actions[i]))
        out.append(Observed(seen, values))
    return out


@dataclass(frozen=True)
class Fired:
    """An alarm or trigger, and how many decisions had been fed when it fired."""

    decisions: int
    alarm: Alarm | None = None
    trigger: RetrainTrigger | None = None


def feed(monitor: Monitor, decisions: Sequence[Observed], labels: Sequence[Label],
         batch: int = 500) -> list[Fired]:  # fmt: skip
    """Feed `decisions` (in time order) and `labels` as they would arrive."""
    ordered = sorted(labels, key=lambda label: label.labelled_at)
    label_times = [label.labelled_at.timestamp() for label in ordered]
    fired: list[Fired] = []
    at = 0
    for start in range(0, len(decisions), batch):
        part = decisions[start : start + batch]
        end = bisect.bisect_right(label_times, part[-1].seen.at)
        arrived = [(lb.transaction_id, lb.verdict is Verdict.FRAUD, label_times[at + k])
                   for k, lb in enumerate(ordered[at:end])]  # fmt: skip
        at = end
        count = start + len(part)
        for result in (monitor.on_decisions(part), monitor.on_labels(arrived)):
            fired += [Fired(count, alarm=a) for a in result.alarms]
            if result.trigger is not None:
                fired.append(Fired(count, trigger=result.trigger))
    return fired


@dataclass(frozen=True)
class SimulatedRun:
    """What the monitor raised on a simulated history after the training window."""

    fired: list[Fired]
    observed: list[Observed]  # the decisions fed to the monitor
    change_at: int | None  # decisions fed before the simulator's drift began
    monitor: Monitor
    reference: DriftReference  # the trained model's

    @property
    def decisions(self) -> int:
        return len(self.observed)

    def first_trigger(self) -> Fired | None:
        return next((f for f in self.fired if f.trigger is not None), None)

    def alarms(self) -> list[Alarm]:
        return [f.alarm for f in self.fired if f.alarm is not None]


def simulated_run(
    simulation: SimulationConfig, features: FeatureConfig, *, train_days: tuple[float, float],
    training: TrainConfig | None = None, monitor: MonitorConfig | None = None,
) -> SimulatedRun:  # fmt: skip
    """Train on days [a, b) of the simulation (features warmed up on the days before),
    then feed the monitor the model's decisions and the labels from day b on."""
    history = simulated_history(simulation)
    spec = features.resolve()
    data = training_data(history, spec)
    start = simulation.start
    end = start + timedelta(days=train_days[1])
    window = TrainWindow(start=start + timedelta(days=train_days[0]), end=end)
    result = train(window.select(data)[0], training or TrainConfig())
    after = data.event_time >= np.datetime64(end.replace(tzinfo=None))
    X = data.X[after]
    scores, members = result.predict(X)
    actions = action_codes(scores, result.ensemble.disagreement(members),
                           result.ensemble.thresholds)  # fmt: skip
    times = data.event_time[after].astype("datetime64[us]").astype(np.int64) / 1e6
    ids = np.asarray(history.table["transaction_id"].to_pylist())[after]
    names = list(spec.names)
    values = {n: X[:, names.index(n)].astype(np.float64) for n in result.reference.features}
    decisions = observed(ids.tolist(), times, scores, actions, version="simulated",
                         features=values)  # fmt: skip
    run = Monitor(monitor or MonitorConfig(), lambda _version: result.reference)
    fired = feed(run, decisions, history.labels)
    drift = simulation.drift
    change = int(np.searchsorted(times, drift.at.timestamp())) if drift is not None else None
    return SimulatedRun(fired, decisions, change, run, result.reference)
