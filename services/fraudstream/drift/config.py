"""Every detector's settings in one place (`config/drift.yaml`, `FRAUD_DRIFT_CONFIG`).

The detectors are deterministic (River's ADWIN and DDM, and PSI over fixed windows): the
same stream gives the same alarms at the same event, so no seed is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from fraudstream import config_files

Positive = Annotated[float, Field(gt=0.0)]
Share = Annotated[float, Field(gt=0.0, lt=1.0)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PsiConfig(_Frozen):
    """Score and feature distributions against the model's reference (`model.drift_reference`)."""

    window: int = Field(default=5_000, ge=500, description="Decisions per tumbling window.")
    threshold: Positive = Field(default=0.25, description="PSI of a drifted window.")
    severe: Positive = Field(default=0.5, description="PSI that alone triggers retraining.")
    consecutive: int = Field(default=2, ge=1, description="Drifted windows in a row to alarm.")


class RateConfig(_Frozen):
    """ADWIN on the decline and review indicators (and on missed frauds, once labelled)."""

    delta: Share = Field(default=1e-5, description="ADWIN confidence (smaller: fewer alarms).")
    factor: Annotated[float, Field(gt=1.0)] = Field(
        default=1.5, description="A change ADWIN finds alarms when the new mean is this many "
        "times above or below the mean before it.",
    )  # fmt: skip
    min_events: int = Field(default=1_000, ge=1, description="Events before a change to alarm.")
    min_expected: Positive = Field(
        default=50.0, description="...and enough for this many positives at the rate before "
        "it (a decline rate of 0.4 % needs 12,500): fewer cannot tell a rate from noise.",
    )  # fmt: skip


class ErrorConfig(_Frozen):
    """DDM on the error stream of labelled decisions (flagged != fraud)."""

    warm_start: int = Field(default=200, ge=30, description="Labels before DDM can alarm.")
    drift_threshold: Positive = Field(default=3.0, description="DDM's drift level, in sigmas.")


class PrecisionConfig(_Frozen):
    """Precision at the decline threshold over the latest settled declines."""

    window: int = Field(default=200, ge=10, description="Settled declines it is computed on.")
    min_settled: int = Field(default=50, ge=1, description="Settled declines before alarming.")
    floor: Share = Field(
        default=0.5, description="LowModelPrecision below this share of declines being fraud."
    )


class JoinConfig(_Frozen):
    """Labels joined to their decisions by transaction id."""

    ttl_days: Positive = Field(
        default=45.0, description="A decision waits this long (event time) for its label; "
        "after it an unlabelled decline counts as legitimate (settled).",
    )  # fmt: skip
    max_decisions: int = Field(
        default=1_000_000, ge=1_000, description="Decisions held for joining (oldest first out)."
    )
    pending_minutes: Positive = Field(
        default=60.0, description="A label that arrives before its decision waits this long."
    )


class DebounceConfig(_Frozen):
    """When alarms become a retraining trigger on `fraud.retrain`."""

    min_interval_hours: Positive = Field(
        default=6.0, description="At most one trigger per model in this time (event time)."
    )
    groups: int = Field(
        default=2, ge=1, le=3, description="Detectors drifted at once in this many of the "
        "groups outputs, inputs and labels (`drift.detectors.GROUPS`)...",
    )  # fmt: skip
    inputs: int = Field(default=2, ge=1, description="...or this many features drifted at "
                        "once, or one severe alarm.")  # fmt: skip


class MonitorConfig(_Frozen):
    """The drift monitor's detectors, join and debounce."""

    model_name: str = "fraud"
    psi: PsiConfig = PsiConfig()
    score_delta: Share = Field(default=1e-5, description="ADWIN confidence on the mean score.")
    rates: RateConfig = RateConfig()
    errors: ErrorConfig = ErrorConfig()
    precision: PrecisionConfig = PrecisionConfig()
    join: JoinConfig = JoinConfig()
    debounce: DebounceConfig = DebounceConfig()

    @classmethod
    def from_yaml(cls, path: str | Path) -> MonitorConfig:
        """The file's settings over the defaults; a clear error naming the file otherwise."""
        return config_files.load(cls, path, "drift config")
