"""Training data and the chronological train/validation/test split.

Event times are `numpy.datetime64[us]` in UTC (naive values meaning UTC): microsecond
precision like the transaction contract, and unambiguous when written to `training.json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from fraudstream.model.feature_spec import FeatureSpecDoc
from fraudstream.model.provenance import Window
from fraudstream.training.errors import TrainingError

EVENT_TIME_DTYPE = np.dtype("datetime64[us]")


@dataclass(frozen=True)
class TrainingData:
    """A labelled feature matrix in the feature spec's column order.

    `X` is float32 n x f with NaN for missing values, `y` holds 0 (legit) / 1 (fraud) and
    `event_time` is datetime64[us] UTC (see `to_event_time`). Validated on construction.
    """

    X: np.ndarray
    y: np.ndarray
    event_time: np.ndarray
    feature_spec: FeatureSpecDoc

    def __post_init__(self) -> None:
        if self.X.dtype != np.float32 or self.X.ndim != 2:
            raise TrainingError(f"X must be a 2-D float32 array, got {self.X.dtype} {self.X.shape}")
        n, f = self.X.shape
        if f != len(self.feature_spec.names):
            raise TrainingError(
                f"X has {f} columns but the feature spec names {len(self.feature_spec.names)}"
            )
        if np.isinf(self.X).any():
            raise TrainingError("X contains +/-inf: encode missing values as NaN instead")
        if self.y.shape != (n,) or not np.isin(self.y, (0, 1)).all():
            raise TrainingError(f"y must be {n} labels of 0 or 1")
        if self.event_time.dtype != EVENT_TIME_DTYPE or self.event_time.shape != (n,):
            raise TrainingError(f"event_time must be {n} datetime64[us] values: use to_event_time")
        if np.isnat(self.event_time).any():
            raise TrainingError("event_time contains NaT: drop rows without an event time")

    @property
    def n_rows(self) -> int:
        """Number of labelled rows."""
        return int(self.X.shape[0])


def to_event_time(values: np.ndarray) -> np.ndarray:
    """Convert datetime64 of any unit, or epoch seconds (numbers), to datetime64[us] UTC."""
    arr = np.asarray(values)
    if np.issubdtype(arr.dtype, np.datetime64):
        return arr.astype(EVENT_TIME_DTYPE)
    if np.issubdtype(arr.dtype, np.number):
        return np.round(arr.astype(np.float64) * 1e6).astype("int64").astype(EVENT_TIME_DTYPE)
    raise TrainingError(f"cannot read event times of dtype {arr.dtype}: use datetime64 or epoch s")


def as_datetime(value: np.datetime64) -> datetime:
    """A datetime64[us] (UTC) as an aware `datetime`."""
    micros = int(value.astype(EVENT_TIME_DTYPE).astype("int64"))
    return datetime.fromtimestamp(micros / 1e6, tz=UTC)


@dataclass(frozen=True)
class Split:
    """Row indices of each window, in event-time order; windows never share a timestamp."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray

    def windows(self, data: TrainingData) -> list[Window]:
        """Time range and fraud rate of each window."""
        named = (("train", self.train), ("validation", self.validation), ("test", self.test))
        return [_window(name, idx, data) for name, idx in named]


def take_rows(array: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """`array[idx]`, as a view (no copy) when `idx` is a run of consecutive rows: a
    time-ordered history splits into such runs, and copies of a 1 M-row matrix cost
    hundreds of MB."""
    if (
        len(idx)
        and idx[-1] - idx[0] + 1 == len(idx)
        and np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx)))
    ):
        view: np.ndarray = array[idx[0] : idx[-1] + 1]
        return view
    return np.asarray(array[idx])


def _window(name: str, idx: np.ndarray, data: TrainingData) -> Window:
    times = data.event_time[idx]
    frauds = int(data.y[idx].sum())
    return Window(
        name=name,
        start=as_datetime(times.min()),
        end=as_datetime(times.max()),
        rows=len(idx),
        frauds=frauds,
        fraud_rate=frauds / len(idx),
    )


def chronological_split(event_time: np.ndarray, fractions: tuple[float, float, float]) -> Split:
    """Split rows by event time (never at random) into train / validation / test.

    Each cut moves back to the first row of its timestamp so that every validation row is
    strictly later than every training row, and every test row later than validation.
    """
    order = np.argsort(event_time, kind="stable")
    times = event_time[order]
    n = len(order)
    cuts = []
    for share in (fractions[0], fractions[0] + fractions[1]):
        at = min(round(n * share), n - 1)
        cuts.append(int(np.searchsorted(times, times[at], side="left")))
    parts = np.split(order, cuts)
    for name, part in zip(("train", "validation", "test"), parts, strict=True):
        if len(part) == 0:
            raise TrainingError(
                f"the {name} window is empty: too few distinct event times for the split "
                f"{fractions}; provide more data or change the split fractions"
            )
    return Split(train=parts[0], validation=parts[1], test=parts[2])
