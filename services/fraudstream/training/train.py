"""`train(data, config) -> TrainResult`: members, ensemble, calibration, thresholds, metrics."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import lightgbm as lgb
import numpy as np
from sklearn.pipeline import Pipeline

from fraudstream.model.drift_reference import DriftReference
from fraudstream.model.ensemble import (
    ENSEMBLE,
    EnsembleSpec,
    MemberSpec,
    Thresholds,
    action_codes,
    logit,
    member_spread,
)
from fraudstream.model.feature_spec import FeatureSpecDoc
from fraudstream.model.metrics import MetricsReport, ScoreMetrics, evaluate
from fraudstream.model.provenance import TrainingInfo, Window, code_version, library_versions
from fraudstream.model.train_config import TrainConfig
from fraudstream.training.calibration import choose_calibrator, fit_combiner, fit_platt
from fraudstream.training.data import (
    Split,
    TrainingData,
    chronological_split,
    take_rows,
)
from fraudstream.training.errors import TrainingError
from fraudstream.training.members import (
    INPUT_NAME,
    MEMBER_FILES,
    PROBABILITY_OUTPUT,
    fit_lightgbm,
    fit_logreg,
    predict_members,
)
from fraudstream.training.thresholds import choose_thresholds, disagreement_earns_reviews

Labelled = tuple[dict[str, np.ndarray], np.ndarray]  # raw member P(fraud), labels


@dataclass(frozen=True)
class TrainResult:
    """A trained ensemble with everything the registry needs to export and document it."""

    booster: lgb.Booster
    logreg: Pipeline
    ensemble: EnsembleSpec
    feature_spec: FeatureSpecDoc
    info: TrainingInfo
    metrics: MetricsReport
    holdout_X: np.ndarray  # test-window rows for the export parity check
    test_labels: np.ndarray
    test_scores: dict[str, np.ndarray]  # member calibrated probabilities and "ensemble"
    reference: DriftReference  # what the drift monitor compares serving with

    def raw_scores(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Each member's P(fraud) from the training libraries."""
        return predict_members(self.booster, self.logreg, X)

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Calibrated ensemble score and per-member calibrated probabilities (in Python)."""
        return self.ensemble.apply(self.raw_scores(X))


def train(data: TrainingData, config: TrainConfig | None = None) -> TrainResult:
    """Train both members on the train window; fit the rest on validation; test on test."""
    config = config or TrainConfig()
    started = time.perf_counter()
    split = chronological_split(data.event_time, config.split_fractions)
    windows = split.windows(data)
    _check_windows(windows, config)
    X, y, names = data.X, data.y, data.feature_spec.names
    fit_rows, val_rows = (
        (take_rows(X, split.train), y[split.train]),
        (take_rows(X, split.validation), y[split.validation]),
    )
    booster = fit_lightgbm(fit_rows, val_rows, names, config)
    logreg = fit_logreg(*fit_rows, data.feature_spec, config)
    validation = predict_members(booster, logreg, val_rows[0]), val_rows[1]
    test_X = take_rows(X, split.test)
    test = predict_members(booster, logreg, test_X), y[split.test]
    ensemble = fit_ensemble(*validation, n_features=len(names), config=config)
    metrics, test_scores = _evaluate(ensemble, validation, test, booster.current_iteration())
    reference = drift_reference(ensemble, booster, test_X, names, scores=test_scores, y=test[1])
    return TrainResult(
        booster=booster,
        logreg=logreg,
        ensemble=ensemble,
        feature_spec=data.feature_spec,
        info=_info(data, windows, config, time.perf_counter() - started),
        metrics=metrics,
        holdout_X=_holdout(data, split, config),
        test_labels=test[1],
        test_scores=test_scores,
        reference=reference,
    )


def drift_reference(
    ensemble: EnsembleSpec, booster: lgb.Booster, X: np.ndarray, names: Sequence[str], *,
    scores: dict[str, np.ndarray], y: np.ndarray,
) -> DriftReference:  # fmt: skip
    """The test window's distributions and rates, for the drift monitor: the most recent
    rows training saw, scored out of sample as serving would score them."""
    ensemble_scores = scores[ENSEMBLE]
    members = {name: p for name, p in scores.items() if name != ENSEMBLE}
    flags = ensemble.disagreement(members)
    actions = action_codes(ensemble_scores, flags, ensemble.thresholds)
    gains = booster.feature_importance(importance_type="gain")
    importance = dict(zip(names, (float(g) for g in gains), strict=True))
    return DriftReference.build(X, names, ensemble_scores, importance=importance,
                                actions=actions, y=y)  # fmt: skip


def _check_windows(windows: list[Window], config: TrainConfig) -> None:
    train_w, val_w, test_w = windows
    if train_w.frauds in {0, train_w.rows}:
        raise TrainingError("the train window needs both fraud and legit labels")
    if val_w.frauds < config.min_validation_frauds:
        raise TrainingError(
            f"the validation window has {val_w.frauds} frauds; calibration and thresholds "
            f"need at least {config.min_validation_frauds}: train on a longer history or "
            "raise validation in split_fractions"
        )
    if test_w.frauds == 0:
        raise TrainingError("the test window has no fraud: metrics would be meaningless")


def fit_ensemble(
    raw: dict[str, np.ndarray], y: np.ndarray, n_features: int, config: TrainConfig
) -> EnsembleSpec:
    """Member Platt scalers, stacking combiner, calibrator and thresholds on validation."""
    logits = {name: logit(p) for name, p in raw.items()}
    members = [
        MemberSpec(
            name=name,
            family=MEMBER_FILES[name][0],
            file=MEMBER_FILES[name][1],
            output=PROBABILITY_OUTPUT,
            calibration=fit_platt(logits[name], y),
        )
        for name in raw
    ]
    combiner = fit_combiner(logits, y)
    calibrator, log_loss = choose_calibrator(combiner.apply(logits), y)
    draft = EnsembleSpec(
        input_name=INPUT_NAME,
        n_features=n_features,
        members=members,
        combiner=combiner,
        calibrator=calibrator,
        calibration_log_loss=log_loss,
        thresholds=_placeholder_thresholds(config),
        disagreement_margin=config.disagreement_margin,
    )
    scores, calibrated = draft.apply(raw)
    budget, target = config.review_budget, config.target_decline_precision
    margin = fitting_margin(calibrated, config.disagreement_margin,
                            budget * config.max_disagreement_share)  # fmt: skip
    draft = draft.model_copy(update={"disagreement_margin": margin})
    flags = draft.disagreement(calibrated)
    with_flags = choose_thresholds(scores, y, flags, budget, target)
    without = choose_thresholds(scores, y, np.zeros_like(flags), budget, target)
    keep = disagreement_earns_reviews(scores, y, flags, with_flags, without)
    return draft.model_copy(
        update={"thresholds": with_flags if keep else without, "disagreement_reviews": keep}
    )


def fitting_margin(members: dict[str, np.ndarray], margin: float, cap: float) -> float:
    """`margin`, raised if needed so that at most a `cap` share of rows has members
    differing by more: disagreement reviews then leave the score band part of the budget."""
    spread = member_spread(members)
    if np.mean(spread > margin) <= cap:
        return margin
    return float(np.quantile(spread, 1.0 - cap, method="higher"))


def _placeholder_thresholds(config: TrainConfig) -> Thresholds:
    return Thresholds(
        review=1.0,
        decline=1.0,
        decline_target_met=False,
        review_budget=config.review_budget,
        target_decline_precision=config.target_decline_precision,
        validation_review_rate=0.0,
        validation_decline_rate=0.0,
        validation_decline_precision=None,
    )


def _evaluate(
    ensemble: EnsembleSpec, validation: Labelled, test: Labelled, best_iteration: int
) -> tuple[MetricsReport, dict[str, np.ndarray]]:
    """Ensemble and per-member metrics; each member gets thresholds chosen like the ensemble's."""
    budget = ensemble.thresholds.review_budget
    target = ensemble.thresholds.target_decline_precision
    val_members = ensemble.apply(validation[0])[1]
    member_thresholds = {
        name: choose_thresholds(p, validation[1], np.zeros(len(p), bool), budget, target)
        for name, p in val_members.items()
    }
    report: dict[str, dict[str, ScoreMetrics]] = {}
    test_scores: dict[str, np.ndarray] = {}
    for window, (raw, y) in (("validation", validation), ("test", test)):
        scores, members = ensemble.apply(raw)
        report[window] = {
            name: evaluate(y, p, member_thresholds[name]) for name, p in members.items()
        }
        report[window][ENSEMBLE] = evaluate(
            y, scores, ensemble.thresholds, ensemble.disagreement(members)
        )
        test_scores = {**members, ENSEMBLE: scores}
    metrics = MetricsReport(
        validation=report["validation"],
        test=report["test"],
        member_thresholds=member_thresholds,
        lightgbm_best_iteration=best_iteration,
    )
    return metrics, test_scores


def _info(
    data: TrainingData, windows: list[Window], config: TrainConfig, duration: float
) -> TrainingInfo:
    frauds = int(data.y.sum())
    return TrainingInfo(
        windows=windows,
        rows=data.n_rows,
        frauds=frauds,
        fraud_rate=frauds / data.n_rows,
        n_features=len(data.feature_spec.names),
        seed=config.seed,
        config=config,
        code_version=code_version(),
        libraries=library_versions(),
        trained_at=datetime.now(UTC),
        duration_seconds=round(duration, 3),
    )


def _holdout(data: TrainingData, split: Split, config: TrainConfig) -> np.ndarray:
    """A seeded sample of test-window rows, in time order."""
    rng = np.random.default_rng(config.seed)
    size = min(config.parity_rows, len(split.test))
    rows = np.sort(rng.choice(split.test, size=size, replace=False))
    return np.ascontiguousarray(data.X[rows])
