"""Fitting the combiner and calibrators on the validation window (scikit-learn, train-time).

All three are low-capacity maps (3 stacking parameters, a monotone curve, 2 Platt
parameters per member), so fitting them on the same window that early-stopped LightGBM
costs little optimism; the later test window stays untouched for the honest estimate.
"""

from __future__ import annotations

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from fraudstream.training.ensemble import Calibrator, Combiner, PlattScaler


def _logistic(features: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Coefficients and intercept of an unweighted logistic regression (L2, C=1)."""
    model = LogisticRegression(C=1.0, max_iter=1000)
    model.fit(features, y)
    return model.coef_.ravel().astype(np.float64), float(model.intercept_[0])


def fit_combiner(logits: dict[str, np.ndarray], y: np.ndarray) -> Combiner:
    """Non-negative logistic stacking: members given a negative weight are dropped and refit.

    Member logits are strongly correlated; a negative weight would make the ensemble
    reward a member for being wrong, which does not survive drift.
    """
    names = list(logits)
    active = list(names)
    while True:
        coef, intercept = _logistic(np.column_stack([logits[n] for n in active]), y)
        if (coef >= 0).all() or len(active) == 1:
            break
        active = [n for n, c in zip(active, coef, strict=True) if c >= 0] or [active[0]]
    weights = dict(zip(active, np.maximum(coef, 0.0).tolist(), strict=True))
    return Combiner(
        members=names, weights=[weights.get(n, 0.0) for n in names], intercept=intercept
    )


def fit_calibrator(z: np.ndarray, y: np.ndarray) -> Calibrator:
    """Centred isotonic regression: isotonic fit, then interpolate between block centroids.

    Plain isotonic regression is a step function whose flat blocks tie many scores, which
    loses ranking inside a block and makes budget-sized thresholds impossible to place;
    joining the block centroids keeps calibration and makes the map strictly increasing.
    """
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
    order = np.argsort(z, kind="stable")
    zs = z[order]
    fitted = iso.fit_transform(zs, y[order].astype(np.float64))
    starts = np.flatnonzero(np.diff(fitted, prepend=np.nan) != 0)
    counts = np.diff(np.append(starts, len(zs)))
    centroids = np.add.reduceat(zs, starts) / counts
    values = fitted[starts]
    keep = np.append(np.diff(centroids) > 0, True)  # guard against float ties
    return Calibrator(x=centroids[keep].tolist(), y=values[keep].tolist())


def fit_platt(logits: np.ndarray, y: np.ndarray) -> PlattScaler:
    """Platt scaling of one member's logit (used for member scores and disagreement)."""
    coef, intercept = _logistic(logits.reshape(-1, 1), y)
    return PlattScaler(a=float(coef[0]), b=intercept)
