"""What serving is compared against: a model version's reference distributions.

Training keeps, in each version's `reference.json`, the distribution of the ensemble
score and of the version's most important features on its test window (the most recent
rows it saw, scored out of sample): quantile bin edges and the share of rows per bin.
The drift monitor bins live decisions the same way and measures the population
stability index (PSI) against it. numpy and pydantic only: training writes it, the
monitor reads it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

REFERENCE_FILE = "reference.json"
SCORE = "score"  # the name the ensemble score is binned under
BINS = 10  # quantile bins per distribution (deciles), fewer where values repeat
MIN_SHARE = 1e-4  # a bin's share is floored here in PSI (an empty bin is not infinitely far)
# The payment's own inputs that drift moves first (amounts, card-present share, risky
# merchant categories): watched whatever the model's importances.
ALWAYS = ("amount_log", "card_present", "high_risk_mcc")
# Never watched by PSI: time-of-day features follow the clock (a window of night traffic
# differs from the training mix by design), and label risk follows fraud incidents, which
# come and go (the labelled-error detectors watch what they do to the model).
UNMONITORED = frozenset({"hour_sin", "hour_cos"})


def monitored(name: str) -> bool:
    return name not in UNMONITORED and "_label_risk_" not in name


class Distribution(BaseModel):
    """A histogram: `edges` split values into len(edges) + 1 bins (a value equal to an edge
    goes right); `shares` per bin, then `missing`, the share of NaN values."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    edges: tuple[float, ...]
    shares: tuple[float, ...]
    missing: float = Field(ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _shape(self) -> Distribution:
        if len(self.shares) != len(self.edges) + 1:
            raise ValueError("shares needs one value per bin (len(edges) + 1)")
        if list(self.edges) != sorted(set(self.edges)):
            raise ValueError("edges must be strictly increasing")
        return self

    @classmethod
    def of(cls, values: np.ndarray, bins: int = BINS) -> Distribution:
        """Quantile bins of `values` (NaN counted apart)."""
        values = np.asarray(values, dtype=np.float64)
        present = values[~np.isnan(values)]
        qs = np.linspace(0.0, 1.0, bins + 1)[1:-1]
        # "higher": edges are values the data has, so a binary column splits at 1.
        edges = np.unique(np.quantile(present, qs, method="higher")) if len(present) else qs[:0]
        # An edge at the minimum would leave its left bin empty for ever: drop it.
        if len(present) and len(edges) and edges[0] <= present.min():
            edges = edges[1:]
        if len(present) and not len(edges):  # constant: any other value must show
            edges = np.array([np.nextafter(present.max(), np.inf)])
        counts = bin_counts(edges, present)
        n = max(len(values), 1)
        return cls(
            edges=tuple(float(e) for e in edges),
            shares=tuple(float(c) / max(len(present), 1) for c in counts),
            missing=float(len(values) - len(present)) / n,
        )

    def psi(self, values: np.ndarray) -> float:
        """Population stability index of `values` against this distribution: the sum over
        bins (and the missing bin) of (q - p) ln(q / p). 0.1 is commonly read as a small
        shift, 0.25 as a significant one."""
        values = np.asarray(values, dtype=np.float64)
        present = values[~np.isnan(values)]
        n = len(values)
        if n == 0:
            return 0.0
        p = np.append(np.asarray(self.shares) * (1.0 - self.missing), self.missing)
        q = np.append(bin_counts(np.asarray(self.edges), present), n - len(present)) / n
        p, q = np.maximum(p, MIN_SHARE), np.maximum(q, MIN_SHARE)
        return float(np.sum((q - p) * np.log(q / p)))


def bin_counts(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """How many `values` fall in each of the len(edges) + 1 bins."""
    at = np.searchsorted(edges, values, side="right")
    return np.bincount(at, minlength=len(edges) + 1).astype(np.float64)


class DriftReference(BaseModel):
    """`reference.json` of a model version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    rows: int = Field(ge=1, description="Test-window rows the distributions come from.")
    score: Distribution
    features: dict[str, Distribution] = Field(
        description="The monitored features (most important first) and their distributions."
    )
    score_mean: float = Field(ge=0.0, le=1.0)
    decline_rate: float = Field(ge=0.0, le=1.0)
    review_rate: float = Field(ge=0.0, le=1.0)
    miss_rate: float = Field(ge=0.0, le=1.0, description="Share of frauds approved.")

    @classmethod
    def build(
        cls, X: np.ndarray, names: Sequence[str], scores: np.ndarray, *,
        importance: Mapping[str, float], actions: np.ndarray, y: np.ndarray, top: int = 8,
    ) -> DriftReference:  # fmt: skip
        """From the test window's feature rows `X` (columns `names`), ensemble `scores`,
        decisions (`actions`: 0 approve, 1 review, 2 decline) and labels `y`. Watched: the
        `top` features by `importance` (LightGBM gain), then `ALWAYS`; never time-of-day or
        label risk (`monitored`)."""
        ranked = sorted(
            (n for n in names if monitored(n) and importance.get(n, 0.0) > 0.0),
            key=lambda n: -importance[n],
        )[:top]
        ranked += [n for n in ALWAYS if n in names and n not in ranked]
        column = {n: i for i, n in enumerate(names)}
        return cls(
            rows=len(scores),
            score=Distribution.of(scores),
            features={n: Distribution.of(X[:, column[n]]) for n in ranked},
            score_mean=float(np.mean(scores)),
            decline_rate=float(np.mean(actions == 2)),
            review_rate=float(np.mean(actions == 1)),
            miss_rate=float(np.mean(actions[y == 1] == 0)) if y.any() else 0.0,
        )

    def write(self, directory: Path) -> None:
        (directory / REFERENCE_FILE).write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def read(cls, directory: Path) -> DriftReference | None:
        """The version's reference; None for a version trained before references existed."""
        path = directory / REFERENCE_FILE
        if not path.exists():
            return None
        return cls.model_validate_json(path.read_text())
