"""The two ensemble members: LightGBM and a scaled logistic regression (a different family)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from fraudstream.model.feature_spec import FeatureSpecDoc
from fraudstream.model.train_config import TrainConfig

LIGHTGBM = "lightgbm"
LOGREG = "logreg"
# Member name -> (model family, ONNX file in the version directory).
MEMBER_FILES = {
    LIGHTGBM: ("gradient_boosted_trees", "lightgbm.onnx"),
    LOGREG: ("logistic_regression", "logreg.onnx"),
}
INPUT_NAME = "features"
PROBABILITY_OUTPUT = "probabilities"


def fit_lightgbm(
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    names: list[str],
    config: TrainConfig,
) -> lgb.Booster:
    """Gradient-boosted trees, early-stopped on validation average precision.

    The returned booster holds exactly the best iteration's trees, so the ONNX export,
    `lightgbm.txt` and explanations all use the same model.
    """
    params = config.lightgbm.to_lightgbm(config.seed)
    dtrain = lgb.Dataset(train[0], label=train[1], feature_name=names)
    dvalid = lgb.Dataset(validation[0], label=validation[1], reference=dtrain)
    booster = lgb.train(
        params,
        dtrain,
        num_boost_round=config.lightgbm.num_boost_round,
        valid_sets=[dvalid],
        valid_names=["validation"],
        callbacks=[
            _early_stopping(config.lightgbm.early_stopping_rounds, config.lightgbm.min_boost_round)
        ],
    )
    best = booster.best_iteration or booster.current_iteration()
    return lgb.Booster(model_str=float32_thresholds(booster.model_to_string(num_iteration=best)))


def _early_stopping(patience: int, min_rounds: int) -> Callable[[Any], None]:
    """Stop `patience` rounds after the best validation score, choosing the best among
    rounds `min_rounds` and later only: on a validation window with few frauds, average
    precision peaks by chance in the first rounds, and stopping there keeps a stump."""
    best = {"score": -math.inf, "iteration": -1}

    def callback(env: Any) -> None:
        (_data, _metric, score, higher_better), *_rest = env.evaluation_result_list
        value = score if higher_better else -score
        round_number = env.iteration + 1
        if round_number >= min_rounds and value > best["score"]:
            best["score"], best["iteration"] = value, env.iteration
        last = env.iteration == env.end_iteration - 1
        if round_number >= min_rounds and (last or env.iteration - best["iteration"] >= patience):
            raise lgb.callback.EarlyStopException(int(best["iteration"]),
                                                  env.evaluation_result_list)  # fmt: skip

    callback.order = 30  # type: ignore[attr-defined]  # where LightGBM runs early stopping
    return callback


def float32_thresholds(model_str: str) -> str:
    """Snap every split threshold down to the largest float32 not above it.

    LightGBM compares features with float64 thresholds; ONNX tree ensembles store float32
    ones, and rounding a threshold to the *nearest* float32 can move it above a feature
    value, sending that row down the other branch (seen: 0.007 score differences). For
    float32 inputs, `x <= t` and `x <= floor32(t)` agree everywhere, so this changes no
    prediction on our data while making the ONNX export compare exactly like LightGBM.
    """
    lines = []
    for line in model_str.splitlines():
        if line.startswith("tree_sizes="):
            continue  # byte offsets of the trees; they change, and LightGBM can do without
        if line.startswith("threshold="):
            values = np.array(line.removeprefix("threshold=").split(), dtype=np.float64)
            snapped = values.astype(np.float32)
            too_high = snapped.astype(np.float64) > values
            snapped[too_high] = np.nextafter(snapped[too_high], np.float32(-np.inf))
            lines.append("threshold=" + " ".join(repr(float(v)) for v in snapped))
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def fit_logreg(X: np.ndarray, y: np.ndarray, spec: FeatureSpecDoc, config: TrainConfig) -> Pipeline:
    """Impute (spec default, else training median), standardise, logistic regression.

    Class weights are balanced: without them the linear boundary is set by the 99 %
    legitimate traffic. The shifted probabilities are undone by the combiner and Platt
    calibration fitted on the validation window.
    """
    X, y = _at_most(X, y, config.logreg.max_rows, config.seed)
    imputer = SimpleImputer(strategy="median", keep_empty_features=True).fit(X)
    for i, name in enumerate(spec.names):
        if name in spec.defaults:
            imputer.statistics_[i] = spec.defaults[name]
    filled = imputer.transform(X)  # float32, as ONNX computes (float64 here drifts 1e-3)
    scaler = StandardScaler().fit(filled)
    classifier = LogisticRegression(
        C=config.logreg.C,
        max_iter=config.logreg.max_iter,
        class_weight="balanced" if config.logreg.class_weight_balanced else None,
    ).fit(scaler.transform(filled, copy=False), y)
    return Pipeline([("impute", imputer), ("scale", scaler), ("classify", classifier)])


def _at_most(X: np.ndarray, y: np.ndarray, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Every fraud row and a seeded sample of the legitimate ones, `rows` in all (in their
    original order); the data unchanged when it is no larger."""
    if len(y) <= rows:
        return X, y
    frauds = np.flatnonzero(y == 1)
    legit = np.flatnonzero(y != 1)
    keep = np.random.default_rng(seed).choice(legit, max(rows - len(frauds), 1), replace=False)
    chosen = np.sort(np.concatenate([frauds, keep]))
    return X[chosen], y[chosen]


def predict_members(booster: lgb.Booster, logreg: Pipeline, X: np.ndarray) -> dict[str, np.ndarray]:
    """Each member's P(fraud) from the training libraries, float64."""
    return {
        LIGHTGBM: np.asarray(booster.predict(X), dtype=np.float64),
        LOGREG: np.asarray(logreg.predict_proba(X)[:, 1], dtype=np.float64),
    }
