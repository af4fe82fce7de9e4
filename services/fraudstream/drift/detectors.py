"""The monitor's detectors: plain objects fed values in event order, returning alarms.

Three kinds, one interface (`update(values, times) -> alarms`, `status()`):

- `PsiDetector`: tumbling windows of a score or feature against the model's reference
  distribution (`model.drift_reference`); alarms after `consecutive` windows at or over the
  threshold.
- `RateDetector`: River's ADWIN keeps an adaptive window of a 0/1 or numeric stream (the
  decline indicator, the review indicator, the score, missed frauds); a change it finds
  alarms when the mean moved by at least a factor.
- `DdmDetector`: River's DDM on the error stream of labelled decisions.
- `PrecisionDetector`: the share of fraud among the latest settled declines, against a
  floor.

An alarm is raised once, on the transition into the drifted state; `status()` says
whether a detector is drifted now, which the monitor's gauges export.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from river.drift import ADWIN
from river.drift.binary import DDM

from fraudstream.drift.config import ErrorConfig, PrecisionConfig, PsiConfig, RateConfig
from fraudstream.model.drift_reference import Distribution

GROUPS = {
    "score_psi": "outputs", "score_mean": "outputs", "decline_rate": "outputs",
    "review_rate": "outputs", "feature_psi": "inputs", "error_ddm": "labels",
    "miss_rate": "labels", "precision": "labels",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Alarm:
    """One detector entering its drifted state; times are event times (epoch seconds)."""

    detector: str
    statistic: str
    value: float
    threshold: float
    severe: bool
    model_version: str
    window_start: float
    window_end: float
    feature: str | None = None
    evidence: dict[str, float] = field(default_factory=dict)

    @property
    def group(self) -> str:
        """What the detector watches: the model's outputs (score and rates, which move
        together when an attack raises declines), its inputs, or its labelled errors. A
        trigger needs evidence from more than one group (`Debouncer`)."""
        return GROUPS[self.detector]

    @property
    def key(self) -> str:
        """Which detector this is, feature included (`feature_psi.amount_log`)."""
        return self.detector if self.feature is None else f"{self.detector}.{self.feature}"


@dataclass(frozen=True, slots=True)
class DetectorStatus:
    """A detector's latest statistic, for gauges and `fraudctl drift status`."""

    detector: str
    feature: str | None
    statistic: str
    value: float
    threshold: float
    drifted: bool
    events: int
    last_alarm_at: float | None


class _Detector:
    """What every detector keeps: identity, counters and its drifted state."""

    detector = ""
    statistic = ""

    def __init__(self, version: str, feature: str | None = None) -> None:
        self.version = version
        self.feature = feature
        self.events = 0
        self.value = float("nan")
        self.threshold = float("nan")
        self.drifted = False
        self.last_alarm: Alarm | None = None
        self._since: float | None = None  # start of the current stretch of evidence

    def _move(
        self, drifted: bool, start: float, end: float, severe: bool = False, **evidence: float
    ) -> Alarm | None:
        """Record the state after a check; an alarm on the transition into drift."""
        was, self.drifted = self.drifted, drifted
        if not drifted or was:
            return None
        self.last_alarm = Alarm(self.detector, self.statistic, self.value, self.threshold,
                                severe, self.version, start, end, self.feature,
                                dict(evidence))  # fmt: skip
        return self.last_alarm

    def status(self) -> DetectorStatus:
        last = self.last_alarm.window_end if self.last_alarm is not None else None
        return DetectorStatus(self.detector, self.feature, self.statistic, self.value,
                              self.threshold, self.drifted, self.events, last)  # fmt: skip


class PsiDetector(_Detector):
    """PSI of tumbling windows of values against a reference distribution."""

    statistic = "psi"

    def __init__(
        self, detector: str, reference: Distribution, config: PsiConfig, version: str,
        feature: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__(version, feature)
        self.detector = detector
        self.reference = reference
        self.config = config
        self.threshold = config.threshold
        self._values: list[np.ndarray] = []
        self._times: list[np.ndarray] = []
        self._held = 0
        self._streak = 0

    def update(self, values: np.ndarray, times: np.ndarray) -> list[Alarm]:
        self.events += len(values)
        self._values.append(np.asarray(values, dtype=np.float64))
        self._times.append(np.asarray(times, dtype=np.float64))
        self._held += len(values)
        alarms: list[Alarm] = []
        size = self.config.window
        if self._held < size:
            return alarms
        held, when = np.concatenate(self._values), np.concatenate(self._times)
        full = (len(held) // size) * size
        for at in range(0, full, size):
            alarm = self._check(held[at : at + size], when[at : at + size])
            if alarm is not None:
                alarms.append(alarm)
        self._values, self._times = [held[full:]], [when[full:]]
        self._held = len(held) - full
        return alarms

    def _check(self, window: np.ndarray, times: np.ndarray) -> Alarm | None:
        self.value = self.reference.psi(window)
        start, end = float(times.min()), float(times.max())
        over = self.value >= self.config.threshold
        self._streak = self._streak + 1 if over else 0
        severe = self.value >= self.config.severe
        if not over:
            self._since = None
            return self._move(False, start, end)
        self._since = start if self._since is None else self._since
        return self._move(severe or self._streak >= self.config.consecutive, self._since, end,
                          severe, windows=float(self._streak))  # fmt: skip


class RateDetector(_Detector):
    """ADWIN on a stream (a 0/1 indicator or the score). A change ADWIN finds opens an
    episode with the mean before it as the baseline; once the window after the change
    holds enough events, it alarms if its mean is `factor` times above or below the
    baseline, else the episode closes. A drifted detector recovers when the mean is back
    within the square root of the factor (so it does not flap at the edge)."""

    def __init__(
        self, detector: str, statistic: str, *, reference: float, delta: float,
        config: RateConfig, version: str,
    ) -> None:  # fmt: skip
        super().__init__(version)
        self.detector, self.statistic = detector, statistic
        self.reference = reference  # the model's test-window rate: evidence only
        self.config = config
        self._adwin = ADWIN(delta=delta)  # type: ignore[no-untyped-call]
        self._baseline: float | None = None  # the mean before the change that alarmed
        self._window_start: float | None = None

    def _enough(self, width: float, mean: float) -> bool:
        """Whether a window holds enough events (and positives) to trust its mean."""
        expected = max(mean, self.reference, 1e-9)
        return width >= max(self.config.min_events, self.config.min_expected / expected)

    def update(self, values: Iterable[float], times: Iterable[float]) -> list[Alarm]:
        adwin, factor, alarms = self._adwin, self.config.factor, []
        for x, t in zip(values, times, strict=True):
            before, width = adwin.estimation, adwin.width
            adwin.update(x)  # type: ignore[no-untyped-call]
            self.events += 1
            self._window_start = t if self._window_start is None else self._window_start
            if adwin.drift_detected:
                self._window_start = t
                if self._baseline is None and self._enough(width, before):
                    self._baseline = before  # a change: compare what follows with this
            elif self.events % 256:
                continue  # the episode is checked on every change and every 256 events
            self.value = adwin.estimation
            if self._baseline is None:
                continue
            ratio = self.value / max(self._baseline, 1e-12)
            settled = self._enough(adwin.width, self.value)  # the new window is trustworthy
            if self.drifted:
                if factor**-0.5 <= ratio <= factor**0.5:
                    self._baseline = None
                    self._move(False, t, t)
            elif settled and (ratio >= factor or ratio <= 1.0 / factor):
                self.threshold = self._baseline * (factor if ratio > 1.0 else 1.0 / factor)
                alarm = self._move(True, self._window_start, t, before=self._baseline,
                                   reference=self.reference)  # fmt: skip
                if alarm is not None:
                    alarms.append(alarm)
            elif settled and not adwin.drift_detected:
                self._baseline = None  # the change was smaller than the factor
        return alarms


class DdmDetector(_Detector):
    """River's DDM on the 0/1 errors of labelled decisions (a rise of the error rate)."""

    detector = "error_ddm"
    statistic = "error_rate"

    def __init__(self, config: ErrorConfig, version: str) -> None:
        super().__init__(version)
        self.config = config
        self.threshold = config.drift_threshold
        self._ddm = DDM(warm_start=config.warm_start, drift_threshold=config.drift_threshold)
        self._run = self._errors = 0  # labels and errors since DDM last restarted
        self._start: float | None = None

    def update(self, errors: Iterable[bool], times: Iterable[float]) -> list[Alarm]:
        alarms: list[Alarm] = []
        for error, t in zip(errors, times, strict=True):
            self._ddm.update(error)  # type: ignore[no-untyped-call]
            self.events += 1
            self._run += 1
            self._errors += error
            self._start = t if self._start is None else self._start
            self.value = self._errors / self._run
            if self._ddm.drift_detected:
                self.drifted = False  # DDM restarts after a detection: the next one counts too
                alarm = self._move(True, self._start, t, labels=float(self._run))
                self._start, self._run, self._errors = None, 0, 0
                if alarm is not None:
                    alarms.append(alarm)
        # A detection is a moment, not a state: labels are sparse, so a DDM alarm counts
        # towards a trigger only with the batch it came in.
        self.drifted = False
        return alarms


class PrecisionDetector(_Detector):
    """Share of fraud among the latest settled declines (LowModelPrecision)."""

    detector = "precision"
    statistic = "decline_precision"

    def __init__(self, config: PrecisionConfig, version: str) -> None:
        super().__init__(version)
        self.config = config
        self.threshold = config.floor
        self._latest: deque[tuple[bool, float]] = deque(maxlen=config.window)
        self._frauds = 0

    def update(self, frauds: Iterable[bool], times: Iterable[float]) -> list[Alarm]:
        alarms = []
        latest = self._latest
        for fraud, t in zip(frauds, times, strict=True):
            if len(latest) == latest.maxlen:
                self._frauds -= latest[0][0]
            latest.append((fraud, t))
            self._frauds += fraud
            self.events += 1
            self.value = self._frauds / len(latest)
            if len(latest) < self.config.min_settled:
                continue
            alarm = self._move(self.value < self.config.floor, latest[0][1], t,
                               settled=float(len(latest)))  # fmt: skip
            if alarm is not None:
                alarms.append(alarm)
        return alarms
