"""From labelled history to a registered model version: features, training, registry.

`fraudctl train` runs this on simulated data or on a user's labelled file. Features come
from the same `FeaturePipeline` the scorer uses, replayed in event-time order with each
label applied when it became known.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from fraudstream.contracts import Label
from fraudstream.datasets import LabelledHistory, load_labelled
from fraudstream.features.pipeline import FeaturePipeline, replay_events
from fraudstream.features.spec import FeatureConfig, FeatureSpec
from fraudstream.model.feature_spec import FeatureSpecDoc, feature_spec_of
from fraudstream.model.train_config import TrainConfig
from fraudstream.registry import ModelVersion, Registry, Stage, VersionDetails
from fraudstream.simulator import SimulationConfig, simulate
from fraudstream.simulator.archive import archive_tables
from fraudstream.training.data import TrainingData, to_event_time
from fraudstream.training.errors import TrainingError
from fraudstream.training.publish import register
from fraudstream.training.train import TrainResult, train

_log = logging.getLogger(__name__)


@dataclass
class StageTimes:
    """Wall-clock seconds per stage, for the CLI summary and the benchmark; `say`, when
    given, hears each stage as it ends (progress on a long training run)."""

    seconds: dict[str, float] = field(default_factory=dict)
    say: Callable[[str], None] | None = None

    def record(self, stage: str, started: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] = now - started
        if self.say is not None:
            self.say(f"  {stage} done in {now - started:.1f} s")
        return now


def simulated_history(config: SimulationConfig) -> LabelledHistory:
    """Labelled history from the simulator: validated transactions, truth, late labels."""
    return simulated_history_and_scenarios(config)[0]


def simulated_history_and_scenarios(
    config: SimulationConfig,
) -> tuple[LabelledHistory, dict[str, str]]:
    """`simulated_history`, and each fraud's scenario by transaction id."""
    sim = simulate(config)
    txs = sim.transactions  # in event time order, which `archive_tables` keeps
    truth = np.asarray(txs["is_fraud"].to_numpy(zero_copy_only=False), dtype=np.int8)
    scenarios = {
        tid: scenario
        for tid, scenario in zip(txs["transaction_id"].to_pylist(),
                                 txs["scenario"].to_pylist(), strict=True)
        if scenario
    }  # fmt: skip
    table, _labels = archive_tables(sim, partitions=1)
    labels = labels_from_table(sim.labels)
    del sim, txs
    pa.default_memory_pool().release_unused()  # the simulation's buffers (~150 MB per 1 M rows)
    return LabelledHistory(table, truth, labels), scenarios


def labels_from_table(table: pa.Table) -> list[Label]:
    return [Label.model_validate(row, strict=False) for row in table.to_pylist()]


def training_data(history: LabelledHistory, spec: FeatureSpec) -> TrainingData:
    """Replay the history through the feature pipeline into a training matrix."""
    matrix = replay_events(
        FeaturePipeline(spec), history.events(), history.labels, rows=len(history)
    )
    event_us = history.event_micros()
    defaults = {n: v for n, v in spec.producer_defaults.items() if v is not None}
    doc = FeatureSpecDoc(
        names=list(spec.names),
        defaults=defaults,
        source={"pipeline": "fraudstream.features", "feature_spec": spec.model_dump(mode="json")},
    )
    return TrainingData(
        X=matrix, y=history.y.astype(np.int8), event_time=to_event_time(event_us / 1e6),
        feature_spec=doc,
    )  # fmt: skip


@dataclass(frozen=True)
class TrainWindow:
    """Which rows train (by event time): those in [start, end - mature_days). Every row
    before `start` still warms the entity state up, as serving's would be; rows in the last
    `mature_days` are left out because their labels were not known by `end` yet."""

    start: datetime | None = None
    end: datetime | None = None
    mature_days: float = 0.0

    def select(self, data: TrainingData) -> tuple[TrainingData, int, int]:
        """(the rows that train, rows before the window, rows too recent to be mature)."""
        t = data.event_time
        early = t < np.datetime64(self._naive(self.start)) if self.start else np.zeros(len(t), bool)
        cut = self.end - timedelta(days=self.mature_days) if self.end else None
        late = t >= np.datetime64(self._naive(cut)) if cut else np.zeros(len(t), bool)
        beyond = t >= np.datetime64(self._naive(self.end)) if self.end else np.zeros(len(t), bool)
        keep = ~early & ~late
        if not keep.any():
            raise TrainingError(f"no rows to train on in {self}")
        chosen = TrainingData(X=data.X[keep], y=data.y[keep], event_time=t[keep],
                              feature_spec=data.feature_spec)  # fmt: skip
        return chosen, int(early.sum()), int((late & ~beyond).sum())

    @staticmethod
    def _naive(when: datetime) -> datetime:
        return when.astimezone(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class TrainOutcome:
    version: ModelVersion
    result: TrainResult
    promoted: bool
    times: StageTimes


def train_and_register(
    history: LabelledHistory,
    *,
    features: FeatureConfig,
    config: TrainConfig,
    registry: Registry,
    name: str,
    promote_if_no_champion: bool = True,
    times: StageTimes | None = None,
    window: TrainWindow | None = None,
    note: str | None = None,
) -> TrainOutcome:
    """Features, training, export with parity check, registry entry (and first promotion).
    With `window`, features are computed over the whole history and only its rows train."""
    times = times or StageTimes()
    started = time.perf_counter()
    data = training_data(history, features.resolve())
    warmup = immature = 0
    if window is not None:
        data, warmup, immature = window.select(data)
    started = times.record("features", started)
    result = train(data, config)
    recorded = {"skipped_rows": dict(history.rejected), "warmup_rows": warmup,
                "immature_rows": immature}  # fmt: skip
    result = dataclasses.replace(result, info=result.info.model_copy(update=recorded))
    started = times.record("train", started)
    note = note or f"{len(history)} transactions"
    version = register(registry, name, result, note=note)
    times.record("export_and_register", started)
    promoted = promote_if_no_champion and registry.champion(name) is None
    if promoted:
        registry.set_stage(
            name, version.version, Stage.CHAMPION, actor="trainer", note="first model"
        )
    return TrainOutcome(version, result, promoted, times)


def labelled_matrix_builder(
    path: Path,
) -> tuple[Callable[[VersionDetails], np.ndarray], np.ndarray]:
    """For `models compare`: each version's feature matrix of one labelled file, and y."""
    history = load_labelled(path)

    def build(details: VersionDetails) -> np.ndarray:
        pipeline = FeaturePipeline(feature_spec_of(details.feature_spec))
        return replay_events(pipeline, history.events(), history.labels, rows=len(history))

    return build, history.y
