"""Training configuration: one frozen object, stored whole in `training.json`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fraudstream import config_files
from fraudstream.errors import invalid

Share = float


class LightGBMParams(BaseModel):
    """LightGBM settings sized for ~1 M rows on 2 cores.

    No class reweighting by default (`scale_pos_weight=1`): the ensemble is calibrated on
    the validation window and thresholds come from the review budget, so inflating the
    positives would only distort probabilities (see the model card's imbalance section).
    Early stopping watches average precision, not log loss, which easy negatives dominate.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_leaves: int = Field(default=63, ge=2)
    learning_rate: float = Field(default=0.05, gt=0, le=1)
    num_boost_round: int = Field(default=400, ge=1)
    early_stopping_rounds: int = Field(default=30, ge=1)
    min_boost_round: int = Field(
        default=1, ge=1, description="Early stopping keeps no round before this one."
    )
    min_child_samples: int = Field(default=100, ge=1)
    feature_fraction: float = Field(default=0.8, gt=0, le=1)
    bagging_fraction: float = Field(default=0.8, gt=0, le=1)
    bagging_freq: int = Field(default=1, ge=0)
    lambda_l2: float = Field(default=1.0, ge=0)
    max_bin: int = Field(default=255, ge=2)
    scale_pos_weight: float = Field(default=1.0, gt=0)
    num_threads: int = Field(default=2, ge=1)

    def to_lightgbm(self, seed: int) -> dict[str, Any]:
        """Parameters for `lightgbm.train`, deterministic for a given seed and thread count."""
        params = self.model_dump(
            exclude={"num_boost_round", "early_stopping_rounds", "min_boost_round"}
        )
        return {
            **params,
            "objective": "binary",
            "metric": "average_precision",
            "seed": seed,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        }


class LogRegParams(BaseModel):
    """The second ensemble member: median/default imputation, scaling, logistic regression."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    C: float = Field(default=1.0, gt=0)
    max_iter: int = Field(default=1000, ge=10)
    class_weight_balanced: bool = True
    max_rows: int = Field(
        default=250_000,
        ge=1000,
        description="Fit on at most this many training rows: every fraud and a seeded "
        "sample of the legitimate ones (a linear model on ~70 features needs no more, and "
        "the float64 copies scikit-learn makes of 1 M rows cost ~1 GB).",
    )


class TrainConfig(BaseModel):
    """Everything that decides the model besides the data; same data + config => same model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 42
    split_fractions: tuple[Share, Share, Share] = (0.6, 0.2, 0.2)
    lightgbm: LightGBMParams = LightGBMParams()
    logreg: LogRegParams = LogRegParams()
    review_budget: float = Field(
        default=0.005, gt=0, lt=1, description="Share of traffic the reviewers can handle."
    )
    target_decline_precision: float = Field(default=0.9, gt=0, le=1)
    disagreement_margin: float = Field(
        default=0.3,
        gt=0,
        le=1,
        description="Members whose calibrated probabilities differ by more go to review.",
    )
    max_disagreement_share: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="Disagreement reviews take at most this share of the review budget "
        "(the margin is raised until they fit), so the score band is never empty.",
    )
    min_validation_frauds: int = Field(default=10, ge=1)
    parity_rows: int = Field(default=2000, ge=10, description="Test rows for the ONNX check.")

    @model_validator(mode="after")
    def _fractions(self) -> Self:
        if min(self.split_fractions) <= 0 or not math.isclose(sum(self.split_fractions), 1.0):
            raise ValueError("split_fractions must be three positive shares summing to 1")
        return self


def train_config(
    path: Path | None, *, review_budget: float | None = None,
    decline_precision: float | None = None, seed: int | None = None,
) -> TrainConfig:  # fmt: skip
    """The configuration in `path` (defaults without one), with the given values over it."""
    base: dict[str, Any] = {}
    if path is not None:
        base = config_files.read_mapping(path, "training config")
    given = {"review_budget": review_budget, "target_decline_precision": decline_precision,
             "seed": seed}  # fmt: skip
    try:
        return TrainConfig.model_validate(
            {**base, **{k: v for k, v in given.items() if v is not None}}
        )
    except ValidationError as exc:
        raise invalid(f"{path or 'options'}: invalid training config", exc) from exc
