"""Fitting the combiner and calibrators on the validation window (scikit-learn, train-time).

All three are low-capacity maps (3 stacking parameters; a monotone curve or 2 Platt
parameters, chosen by cross-validated log-loss; 2 Platt parameters per member), so
fitting them on the same window that early-stopped LightGBM costs little optimism; the
later test window stays untouched for the honest estimate.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from fraudstream.model.ensemble import Calibrator, Combiner, PlattCalibrator, PlattScaler


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
    """Centred isotonic regression with logistic tails.

    Isotonic regression is a step function whose flat blocks tie many scores, which loses
    ranking inside a block and makes budget-sized thresholds impossible to place; joining
    the block centroids keeps calibration and makes the map strictly increasing between
    them. Beyond the first and last centroid the calibrated logit follows a Platt fit's
    slope, so no floor or ceiling ties the tails.
    """
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
    order = np.argsort(z, kind="stable")
    zs = z[order]
    fitted = iso.fit_transform(zs, y[order].astype(np.float64))
    starts = np.flatnonzero(np.diff(fitted, prepend=np.nan) != 0)
    counts = np.diff(np.append(starts, len(zs)))
    centroids = np.add.reduceat(zs, starts) / counts
    values = fitted[starts].copy()
    slope = max(fit_platt_calibrator(z, y).a, _MIN_SLOPE)
    if len(values) == 1:  # one block: the base rate
        rate = float(np.clip(values[0], 1e-6, 1 - 1e-6))
        return Calibrator(x=[float(centroids[0])], y=[rate], tail_slope=slope)
    # A block of no fraud at all (or only fraud) estimates 0 (1): use half an event out of
    # its size instead, kept below (above) its neighbour, so the tails can be logistic.
    if values[0] == 0.0:
        values[0] = min(0.5 / (counts[0] + 1), values[1] / 2)
    if values[-1] == 1.0:
        values[-1] = max(1.0 - 0.5 / (counts[-1] + 1), (1.0 + values[-2]) / 2)
    keep = np.append(np.diff(centroids) > 0, True)  # guard against float ties
    return Calibrator(x=centroids[keep].tolist(), y=values[keep].tolist(), tail_slope=slope)


_MIN_SLOPE = 1e-3  # a tail must rise, however flat the Platt fit


def fit_platt_calibrator(z: np.ndarray, y: np.ndarray) -> PlattCalibrator:
    """Platt scaling of the combined logit (slope kept positive: ranking is the combiner's)."""
    coef, intercept = _logistic(z.reshape(-1, 1), y)
    return PlattCalibrator(a=max(float(coef[0]), _MIN_SLOPE), b=intercept)


CALIBRATORS: dict[str, Callable[[np.ndarray, np.ndarray], Calibrator | PlattCalibrator]] = {
    "centred_isotonic": fit_calibrator,
    "platt": fit_platt_calibrator,
}


def choose_calibrator(
    z: np.ndarray, y: np.ndarray, folds: int = 5
) -> tuple[Calibrator | PlattCalibrator, dict[str, float]]:
    """The calibrator with the lowest cross-validated log-loss on (z, y), refitted on all
    of it, and each candidate's log-loss. Folds interleave rows (row i in fold i % folds),
    so each spans the whole window; a candidate that cannot be fitted on a fold (a fold
    without fraud) is scored on the folds it can be."""
    losses: dict[str, float] = {}
    fold = np.arange(len(z)) % folds
    for name, fit in CALIBRATORS.items():
        total, rows = 0.0, 0
        for k in range(folds):
            train, held = fold != k, fold == k
            if y[train].min() == y[train].max():
                continue
            p = np.clip(fit(z[train], y[train]).apply(z[held]), 1e-15, 1 - 1e-15)
            total -= float(np.sum(y[held] * np.log(p) + (1 - y[held]) * np.log1p(-p)))
            rows += int(held.sum())
        losses[name] = total / rows if rows else float("inf")
    best = min(losses, key=lambda name: losses[name])
    return CALIBRATORS[best](z, y), losses


def fit_platt(logits: np.ndarray, y: np.ndarray) -> PlattScaler:
    """Platt scaling of one member's logit (used for member scores and disagreement)."""
    coef, intercept = _logistic(logits.reshape(-1, 1), y)
    return PlattScaler(a=float(coef[0]), b=intercept)
