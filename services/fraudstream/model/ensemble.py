"""The ensemble's combination, calibration and thresholds as tiny numpy-applicable parameters.

Serving is: each member's fraud probability (ONNX) -> logit -> weighted sum (combiner)
-> `np.interp` through the calibrator's breakpoints = calibrated score. The same functions
run at training time, so the in-Python ensemble and the ONNX one share every numpy op.
Stored as `ensemble.json`; this module needs only numpy and pydantic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

ENSEMBLE = "ensemble"  # name of the combined score next to member names in metrics
# Probabilities are clipped before the logit so that 0 and 1 (float32 saturation) stay finite.
LOGIT_EPS = 1e-7
REVIEW_RULE = (
    "review if review <= score < decline, or if score < review and the members' calibrated "
    "probabilities differ by more than disagreement_margin (when disagreement_reviews); "
    "decline if score >= decline"
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PlattScaler(_Frozen):
    """Calibrates one member on its own: p = sigmoid(a * logit(raw) + b)."""

    a: float
    b: float

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probability for each member logit."""
        return _sigmoid(self.a * logits + self.b)


class MemberSpec(_Frozen):
    """One ONNX member: file, output holding [P(legit), P(fraud)], its own calibration."""

    name: str
    family: str
    file: str
    output: str
    calibration: PlattScaler


class Combiner(_Frozen):
    """Non-negative logistic stacking on member logits: z = intercept + sum(w_i * logit_i)."""

    kind: Literal["logistic_stacking"] = "logistic_stacking"
    members: list[str]
    weights: list[float]
    intercept: float

    def apply(self, logits: Mapping[str, np.ndarray]) -> np.ndarray:
        """Combined logit z for each row."""
        z = np.full(len(next(iter(logits.values()))), self.intercept, dtype=np.float64)
        for name, weight in zip(self.members, self.weights, strict=True):
            z += weight * logits[name]
        return z


class Calibrator(_Frozen):
    """Centred isotonic regression of z: piecewise linear through block centroids, with
    logistic tails beyond the first and last breakpoint.

    Strictly increasing everywhere when `tail_slope` is set: beyond the ends the
    calibrated logit moves `tail_slope` per unit of z from the end's value, so no row is
    tied at a floor or a ceiling and ranking among the lowest (and highest) scores is kept.
    Versions without `tail_slope` are constant beyond the ends (they tied 40-70 % of rows
    at the floor).
    """

    kind: Literal["centred_isotonic"] = "centred_isotonic"
    x: list[float] = Field(min_length=1)
    y: list[float] = Field(min_length=1)
    tail_slope: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _monotone(self) -> Self:
        if len(self.x) != len(self.y):
            raise ValueError("calibrator x and y must have the same length")
        if np.any(np.diff(self.x) <= 0) or np.any(np.diff(self.y) < 0):
            raise ValueError("calibrator breakpoints must be increasing in x, non-decreasing in y")
        if self.tail_slope is not None and not (self.y[0] > 0.0 and self.y[-1] < 1.0):
            raise ValueError("logistic tails need end values strictly between 0 and 1")
        return self

    def apply(self, z: np.ndarray) -> np.ndarray:
        """Calibrated fraud probability for each combined logit."""
        z = np.asarray(z, dtype=np.float64)
        p = np.asarray(np.interp(z, self.x, self.y), dtype=np.float64)
        if self.tail_slope is not None:
            for end, value, beyond in ((self.x[0], self.y[0], z < self.x[0]),
                                       (self.x[-1], self.y[-1], z > self.x[-1])):  # fmt: skip
                if beyond.any():
                    start = np.log(value) - np.log1p(-value)
                    p[beyond] = _sigmoid(start + self.tail_slope * (z[beyond] - end))
        return p


class PlattCalibrator(_Frozen):
    """Platt scaling of z: p = sigmoid(a * z + b); strictly increasing, two parameters."""

    kind: Literal["platt"] = "platt"
    a: float = Field(gt=0)
    b: float

    def apply(self, z: np.ndarray) -> np.ndarray:
        """Calibrated fraud probability for each combined logit."""
        return _sigmoid(self.a * np.asarray(z, dtype=np.float64) + self.b)


AnyCalibrator = Annotated[Calibrator | PlattCalibrator, Field(discriminator="kind")]


def _sigmoid(t: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-t), without overflow (|t| beyond 700 saturates in float64 anyway)."""
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(t, -700.0, 700.0))), dtype=np.float64)


class Thresholds(_Frozen):
    """Decision thresholds on the calibrated score, chosen on the validation window."""

    review: float
    decline: float
    decline_target_met: bool = Field(
        description="False when no threshold reached the target precision: the model then "
        "declines nothing (decline is just above 1) and high scores go to review."
    )
    review_budget: float
    target_decline_precision: float
    validation_review_rate: float
    validation_band_rate: float | None = Field(
        default=None, description="The part of the review rate from review <= score < decline."
    )
    validation_decline_rate: float
    validation_decline_precision: float | None


class EnsembleSpec(_Frozen):
    """Everything besides the ONNX files needed to turn member outputs into a decision."""

    schema_version: Literal[1] = 1
    input_name: str
    n_features: int
    members: list[MemberSpec]
    combiner: Combiner
    calibrator: AnyCalibrator
    calibration_log_loss: dict[str, float] = Field(
        default_factory=dict,
        description="Cross-validated log-loss of each calibrator tried on the validation "
        "window; the lowest was chosen.",
    )
    thresholds: Thresholds
    disagreement_margin: float
    disagreement_reviews: bool = Field(
        default=True,
        description="False when, on validation, disagreement cases found fraud less often "
        "than the band cases they would displace from the review budget.",
    )
    review_rule: str = REVIEW_RULE

    def apply(self, raw: Mapping[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Ensemble score and per-member calibrated probabilities from raw member P(fraud)."""
        return apply_ensemble(self.members, self.combiner, self.calibrator, raw)

    def disagreement(self, members: Mapping[str, np.ndarray]) -> np.ndarray:
        """Rows that go to review for disagreement: members differ by more than the margin."""
        flags = disagreement(members, self.disagreement_margin)
        return flags if self.disagreement_reviews else np.zeros_like(flags)


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) in float64, with p clipped to [LOGIT_EPS, 1 - LOGIT_EPS]."""
    q = np.clip(np.asarray(p, dtype=np.float64), LOGIT_EPS, 1.0 - LOGIT_EPS)
    return np.log(q) - np.log1p(-q)


def apply_ensemble(
    members: list[MemberSpec],
    combiner: Combiner,
    calibrator: Calibrator | PlattCalibrator,
    raw: Mapping[str, np.ndarray],
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Score = calibrator(combiner(logits)); members = each member's Platt-calibrated P(fraud)."""
    logits = {m.name: logit(raw[m.name]) for m in members}
    scores = calibrator.apply(combiner.apply(logits))
    calibrated = {m.name: m.calibration.apply(logits[m.name]) for m in members}
    return scores, calibrated


def member_spread(members: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per row, max - min of the members' calibrated probabilities."""
    return np.asarray(np.ptp(np.vstack(list(members.values())), axis=0))


def disagreement(members: Mapping[str, np.ndarray], margin: float) -> np.ndarray:
    """True where the members' spread (`member_spread`) exceeds `margin`."""
    return np.asarray(member_spread(members) > margin)


def review_mask(scores: np.ndarray, disagree: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    """Rows that go to a human, by the rule in `REVIEW_RULE`."""
    below_decline = scores < thresholds.decline
    return np.asarray(below_decline & ((scores >= thresholds.review) | disagree))


def decline_mask(scores: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    """Rows the model declines on its own."""
    return scores >= thresholds.decline


def action_codes(scores: np.ndarray, disagree: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    """Per row, what the model alone decides: 0 approve, 1 review, 2 decline."""
    reviewed = np.where(review_mask(scores, disagree, thresholds), 1, 0)
    return np.where(decline_mask(scores, thresholds), 2, reviewed).astype(np.int8)
