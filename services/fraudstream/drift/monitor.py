"""The monitor's core: decisions and labels in, alarms and retraining triggers out.

No Kafka and no clock: `drift.service` feeds it batches from `fraud.decisions` and
`fraud.labels`; time is the decisions' `decided_at`. Detectors are kept per model
version (a new champion starts fresh detectors against its own reference):

- at once, from each ML decision: the score's PSI and its mean (ADWIN), the decline and
  review rates (ADWIN), and the PSI of the monitored features the scorer attaches;
- as labels arrive (`drift.join`): DDM on errors (flagged != fraud), ADWIN on the share
  of frauds approved, and precision at the decline threshold over settled declines.

`Debouncer` turns alarms into at most one `RetrainTrigger` per `min_interval_hours`: when
detectors of `groups` different groups (outputs, inputs, labels: `Alarm.group`) or of
`inputs` different features are drifted at once, or one new alarm is severe.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import numpy as np

from fraudstream.contracts import RetrainTrigger
from fraudstream.drift.config import DebounceConfig, MonitorConfig
from fraudstream.drift.detectors import (
    Alarm,
    DdmDetector,
    DetectorStatus,
    PrecisionDetector,
    PsiDetector,
    RateDetector,
)
from fraudstream.drift.join import APPROVE, DECLINE, REVIEW, LabelJoin, Outcome, Seen
from fraudstream.model.drift_reference import DriftReference

T = TypeVar("T")
References = Callable[[str], DriftReference | None]  # model version -> its reference


@dataclass(frozen=True, slots=True)
class Observed:
    """An ML decision with the monitored feature values the scorer attached."""

    seen: Seen
    features: Mapping[str, float]


class VersionWatch:
    """Every detector of one model version."""

    def __init__(self, version: str, reference: DriftReference, config: MonitorConfig) -> None:
        self.version = version
        self.reference = reference
        psi, rates = config.psi, config.rates
        self.score_psi = PsiDetector("score_psi", reference.score, psi, version)
        self.features = {
            name: PsiDetector("feature_psi", dist, psi, version, feature=name)
            for name, dist in reference.features.items()
        }
        rate = functools.partial(RateDetector, config=rates, version=version)
        self.score_mean = rate("score_mean", "mean_score", reference=reference.score_mean,
                               delta=config.score_delta)  # fmt: skip
        self.declines = rate("decline_rate", "decline_rate", reference=reference.decline_rate,
                             delta=rates.delta)  # fmt: skip
        self.reviews = rate("review_rate", "review_rate", reference=reference.review_rate,
                            delta=rates.delta)  # fmt: skip
        self.misses = rate("miss_rate", "fraud_approved_rate", reference=reference.miss_rate,
                           delta=rates.delta)  # fmt: skip
        self.errors = DdmDetector(config.errors, version)
        self.precision = PrecisionDetector(config.precision, version)

    def decisions(self, batch: Sequence[Observed]) -> list[Alarm]:
        times = np.fromiter((o.seen.at for o in batch), np.float64, len(batch))
        scores = np.fromiter((o.seen.score for o in batch), np.float64, len(batch))
        actions = np.fromiter((o.seen.action for o in batch), np.int8, len(batch))
        alarms = self.score_psi.update(scores, times)
        for name, detector in self.features.items():
            values = np.fromiter((o.features.get(name, np.nan) for o in batch), np.float64,
                                 len(batch))  # fmt: skip
            alarms += detector.update(values, times)
        alarms += self.score_mean.update(scores.tolist(), times.tolist())
        alarms += self.declines.update((actions == DECLINE).astype(float).tolist(), times.tolist())
        alarms += self.reviews.update((actions == REVIEW).astype(float).tolist(), times.tolist())
        return alarms

    def outcomes(self, batch: Sequence[Outcome]) -> list[Alarm]:
        labelled = [o for o in batch if o.labelled]
        alarms = self.errors.update([(o.action != APPROVE) != o.fraud for o in labelled],
                                    [o.at for o in labelled])  # fmt: skip
        frauds = [o for o in labelled if o.fraud]
        alarms += self.misses.update([float(o.action == APPROVE) for o in frauds],
                                     [o.at for o in frauds])  # fmt: skip
        declines = [o for o in batch if o.action == DECLINE]
        alarms += self.precision.update([o.fraud for o in declines], [o.at for o in declines])
        return alarms

    def active(self) -> list[Alarm]:
        """The alarm of each detector that is drifted now."""
        return [d.last_alarm for d in self.detectors() if d.drifted and d.last_alarm is not None]

    def detectors(self) -> list[PsiDetector | RateDetector | DdmDetector | PrecisionDetector]:
        return [self.score_psi, *self.features.values(), self.score_mean, self.declines,
                self.reviews, self.misses, self.errors, self.precision]  # fmt: skip


class DriftMonitor:
    """Detectors per model version, fed in event order."""

    def __init__(self, config: MonitorConfig, references: References) -> None:
        self.config = config
        self._references = references
        self.watches: dict[str, VersionWatch] = {}
        self.unwatched: set[str] = set()  # versions without a reference (trained before it)

    def watch(self, version: str) -> VersionWatch | None:
        watch = self.watches.get(version)
        if watch is None and version not in self.unwatched:
            reference = self._references(version)
            if reference is None:
                self.unwatched.add(version)
                return None
            watch = self.watches[version] = VersionWatch(version, reference, self.config)
        return watch

    def decisions(self, batch: Sequence[Observed]) -> list[Alarm]:
        """Alarms from a batch of ML decisions, in the order they were decided."""
        alarms: list[Alarm] = []
        for version, part in _by_version(batch, lambda o: o.seen.version).items():
            watch = self.watch(version)
            if watch is not None:
                alarms += watch.decisions(part)
        return alarms

    def outcomes(self, batch: Sequence[Outcome]) -> list[Alarm]:
        """Alarms from labels joined to their decisions and from settled declines."""
        alarms: list[Alarm] = []
        for version, part in _by_version(batch, lambda o: o.version).items():
            watch = self.watch(version)
            if watch is not None:
                alarms += watch.outcomes(part)
        return alarms

    def active(self) -> list[Alarm]:
        """The alarms of every detector drifted now, all versions."""
        return [a for watch in self.watches.values() for a in watch.active()]

    def status(self) -> dict[str, list[DetectorStatus]]:
        """Each watched version's detectors and their latest statistic."""
        return {v: [d.status() for d in w.detectors()] for v, w in self.watches.items()}


def _by_version(batch: Sequence[T], version: Callable[[T], str]) -> dict[str, list[T]]:
    out: dict[str, list[T]] = {}
    for item in batch:
        out.setdefault(version(item), []).append(item)
    return out


class Debouncer:
    """Drifted detectors to retraining triggers: together or severe, and not too often."""

    def __init__(self, config: DebounceConfig, model_name: str) -> None:
        self.config = config
        self.model_name = model_name
        self._last_trigger: float | None = None
        self.suppressed = 0  # triggers held back by the minimum interval

    def offer(self, alarms: Sequence[Alarm], active: Sequence[Alarm]) -> RetrainTrigger | None:
        """A trigger if new `alarms`, with the detectors drifted now (`active`, their latest
        alarms), call for one."""
        if not alarms:
            return None
        now = max(a.window_end for a in alarms)
        drifted = {a.key: a for a in (*active, *alarms)}
        severe = [a for a in alarms if a.severe]
        groups = {a.group for a in drifted.values()}
        inputs = sum(a.group == "inputs" for a in drifted.values())
        if not severe and len(groups) < self.config.groups and inputs < self.config.inputs:
            return None
        if self._last_trigger is not None and (
            now - self._last_trigger < self.config.min_interval_hours * 3600.0
        ):
            self.suppressed += 1
            return None
        self._last_trigger = now
        lead = max(severe or drifted.values(), key=lambda a: a.value / a.threshold)
        return _trigger(self.model_name, lead, list(drifted.values()), now)


def _trigger(model_name: str, lead: Alarm, alarms: list[Alarm], now: float) -> RetrainTrigger:
    evidence = {f"{a.key}.{a.statistic}": a.value for a in alarms}
    evidence.update({f"{lead.key}.{k}": v for k, v in lead.evidence.items()})
    return RetrainTrigger(
        trigger_id=f"drift-{uuid.uuid4().hex[:16]}",
        model_name=model_name,
        model_version=lead.model_version,
        detector=lead.detector,
        feature=lead.feature,
        statistic=lead.statistic,
        value=lead.value,
        threshold=lead.threshold,
        severe=lead.severe,
        window_start=_utc(min(a.window_start for a in alarms)),
        window_end=_utc(now),
        triggered_at=_utc(now),
        evidence=dict(list(evidence.items())[:64]),
    )


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


@dataclass
class Fed:
    """What one batch did: alarms raised and the trigger, if any."""

    alarms: list[Alarm]
    trigger: RetrainTrigger | None


class Monitor:
    """Join, detectors and debounce together: what the service runs per batch."""

    def __init__(
        self, config: MonitorConfig, references: References, join: LabelJoin | None = None
    ) -> None:
        self.config = config
        self.detectors = DriftMonitor(config, references)
        self.join = join if join is not None else LabelJoin(config.join)
        self.debounce = Debouncer(config.debounce, config.model_name)
        self.decisions_seen = 0
        self.labels_seen = 0

    def on_decisions(self, batch: Sequence[Observed]) -> Fed:
        """ML decisions (in decision order): held for their labels, then detected on."""
        self.decisions_seen += len(batch)
        outcomes = [o for o in (self.join.add_decision(d.seen) for d in batch) if o is not None]
        outcomes += self.join.expire()
        alarms = self.detectors.decisions(batch) + self.detectors.outcomes(outcomes)
        return Fed(alarms, self.debounce.offer(alarms, self.detectors.active()))

    def on_labels(self, labels: Sequence[tuple[str, bool, float]]) -> Fed:
        """Labels as (transaction id, fraud, labelled_at epoch seconds)."""
        self.labels_seen += len(labels)
        outcomes = [o for o in (self.join.add_label(*label) for label in labels) if o is not None]
        alarms = self.detectors.outcomes(outcomes)
        return Fed(alarms, self.debounce.offer(alarms, self.detectors.active()))
