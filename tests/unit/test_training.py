"""Training: chronological split, reproducibility, thresholds, metrics, calibration."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from fraudstream.model.ensemble import review_mask
from fraudstream.model.errors import ModelLoadError
from fraudstream.model.explain import PathExplainer, explain
from fraudstream.model.feature_spec import FeatureSpecDoc
from fraudstream.model.metrics import average_precision, recall_at_fpr, roc_auc
from fraudstream.model.provenance import code_version
from fraudstream.model.train_config import LightGBMParams, TrainConfig
from fraudstream.training.calibration import (
    choose_calibrator,
    fit_calibrator,
    fit_platt_calibrator,
)
from fraudstream.training.data import (
    TrainingData,
    chronological_split,
    take_rows,
    to_event_time,
)
from fraudstream.training.errors import TrainingError
from fraudstream.training.members import _at_most, fit_logreg
from fraudstream.training.synthetic import synthetic_training_data
from fraudstream.training.thresholds import (
    MIN_DISAGREEMENT_CASES,
    NEVER,
    choose_thresholds,
    disagreement_earns_reviews,
)
from fraudstream.training.train import TrainResult, fitting_margin, train

SMALL = TrainConfig(
    seed=7,
    lightgbm=LightGBMParams(
        num_leaves=15, num_boost_round=80, early_stopping_rounds=15, min_child_samples=20
    ),
    parity_rows=500,
)
METRIC_KEYS = {
    "rows",
    "frauds",
    "auprc",
    "roc_auc",
    "recall_at_fpr_0_1pct",
    "recall_at_fpr_1pct",
    "precision_at_review_budget",
    "review_rate",
    "decline_rate",
    "decline_precision",
}


@pytest.fixture(scope="module", autouse=True)
def _no_git() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRAUD_GIT_COMMIT", "test-commit")
        yield


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return synthetic_training_data(20_000, n_features=12, seed=3)


@pytest.fixture(scope="module")
def result(data: TrainingData) -> TrainResult:
    return train(data, SMALL)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=3, max_size=200))
def test_chronological_split_never_mixes_times(seconds: list[int]) -> None:
    times = to_event_time(np.array(seconds, dtype=np.float64))
    try:
        split = chronological_split(times, (0.6, 0.2, 0.2))
    except TrainingError:
        return  # too few distinct times for three non-empty windows: refusing is right
    assert times[split.train].max() < times[split.validation].min()
    assert times[split.validation].max() < times[split.test].min()
    every = np.concatenate([split.train, split.validation, split.test])
    assert sorted(every.tolist()) == list(range(len(seconds)))


def test_split_refuses_when_a_window_would_be_empty() -> None:
    with pytest.raises(TrainingError, match="window is empty"):
        chronological_split(to_event_time(np.zeros(50)), (0.6, 0.2, 0.2))


def test_split_follows_the_fractions(data: TrainingData) -> None:
    split = chronological_split(data.event_time, (0.6, 0.2, 0.2))
    assert abs(len(split.train) - 12_000) <= 1
    assert abs(len(split.test) - 4_000) <= 1
    windows = split.windows(data)
    assert [w.name for w in windows] == ["train", "validation", "test"]
    assert windows[0].end < windows[1].start
    assert windows[1].end < windows[2].start


def test_training_data_is_validated() -> None:
    spec = FeatureSpecDoc(names=["a", "b"])
    assert spec.dtypes == ["float32", "float32"]
    times = to_event_time(np.arange(3.0))
    good = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(TrainingError, match="float32"):
        TrainingData(good.astype(np.float64), np.array([0, 1, 0]), times, spec)
    with pytest.raises(TrainingError, match="inf"):
        TrainingData(np.full((3, 2), np.inf, np.float32), np.array([0, 1, 0]), times, spec)
    with pytest.raises(TrainingError, match="0 or 1"):
        TrainingData(good, np.array([0, 2, 0]), times, spec)
    with pytest.raises(TrainingError, match="datetime64"):
        TrainingData(good, np.array([0, 1, 0]), np.arange(3.0), spec)
    with pytest.raises(ValueError, match="unknown features"):
        FeatureSpecDoc(names=["a"], defaults={"b": 0.0})


def test_logreg_imputes_spec_defaults_else_training_medians() -> None:
    X = np.array([[1.0, 10.0], [3.0, np.nan], [np.nan, 30.0], [5.0, 20.0]], dtype=np.float32)
    spec = FeatureSpecDoc(names=["count", "amount"], defaults={"count": -1.0})
    pipeline = fit_logreg(X, np.array([0, 1, 0, 1]), spec, SMALL)
    assert pipeline.named_steps["impute"].statistics_.tolist() == [-1.0, 20.0]


def test_too_few_validation_frauds_is_a_clear_error(data: TrainingData) -> None:
    config = SMALL.model_copy(update={"min_validation_frauds": 10_000})
    with pytest.raises(TrainingError, match="validation window"):
        train(data, config)


def test_reproducible_with_the_seed(data: TrainingData, result: TrainResult) -> None:
    again = train(data, SMALL)
    X = result.holdout_X
    assert np.array_equal(again.predict(X)[0], result.predict(X)[0])
    assert again.ensemble == result.ensemble
    assert again.booster.model_to_string() == result.booster.model_to_string()
    reseeded = train(data, SMALL.model_copy(update={"seed": 8}))
    assert not np.array_equal(reseeded.predict(X)[0], result.predict(X)[0])


def _validation(data: TrainingData) -> tuple[np.ndarray, np.ndarray]:
    split = chronological_split(data.event_time, SMALL.split_fractions)
    return data.X[split.validation], data.y[split.validation]


def test_thresholds_respect_the_review_budget_on_validation(
    data: TrainingData, result: TrainResult
) -> None:
    X, y = _validation(data)
    t = result.ensemble.thresholds
    scores, members = result.predict(X)
    reviewed = review_mask(scores, result.ensemble.disagreement(members), t)
    assert reviewed.mean() == pytest.approx(t.validation_review_rate)
    assert SMALL.review_budget - 2 / len(y) <= reviewed.mean() <= SMALL.review_budget
    assert t.review <= t.decline
    if t.decline_target_met:
        assert y[scores >= t.decline].mean() >= SMALL.target_decline_precision
        # the lowest such threshold: one step lower would break the target or add nothing
        below = scores[scores < t.decline]
        if len(below):
            assert y[scores >= below.max()].mean() < SMALL.target_decline_precision


def test_choose_thresholds_by_hand() -> None:
    scores = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    y = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0])
    agree = np.zeros(10, dtype=bool)
    t = choose_thresholds(scores, y, agree, review_budget=0.2, target_precision=0.75)
    assert t.decline == 0.6  # top 5 have precision 0.8; top 6 fall to 4/6
    assert t.review == 0.4  # 0.5 and 0.4: two rows = 20 % of traffic
    disagree = agree.copy()
    disagree[-1] = True  # one disagreement below the band uses one review slot
    t = choose_thresholds(scores, y, disagree, review_budget=0.2, target_precision=0.75)
    assert t.review == 0.5
    assert t.validation_review_rate == pytest.approx(0.2)
    never = choose_thresholds(scores, y, agree, review_budget=0.2, target_precision=1.01)
    assert never.decline == NEVER
    assert not never.decline_target_met
    assert never.review == 0.9
    assert never.validation_decline_rate == 0.0


def test_disagreement_reviews_only_when_enough_of_them_find_fraud() -> None:
    base = np.array([0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.04, 0.03, 0.02])
    scores = np.tile(base, MIN_DISAGREEMENT_CASES)
    y = np.tile(np.array([1, 1, 0, 0, 0, 0, 1, 0, 0, 0]), MIN_DISAGREEMENT_CASES)
    disagree = np.tile(np.arange(10) == 6, MIN_DISAGREEMENT_CASES)  # a fraud below the band
    without = choose_thresholds(scores, y, np.zeros(len(y), dtype=bool), 0.2, 0.9)
    with_it = choose_thresholds(scores, y, disagree, 0.2, 0.9)
    assert (without.decline, without.review, with_it.review) == (0.5, 0.3, 0.4)
    assert disagreement_earns_reviews(scores, y, disagree, with_it, without)
    y_swapped = y.copy()
    y_swapped[scores == 0.3], y_swapped[scores == 0.05] = 1, 0  # the displaced rows are fraud
    assert not disagreement_earns_reviews(scores, y_swapped, disagree, with_it, without)
    one_case = disagree & (np.arange(len(y)) < 10)
    assert not disagreement_earns_reviews(scores, y, one_case, with_it, without)  # too few


def test_metrics_keys_present_and_sane(result: TrainResult) -> None:
    for window in (result.metrics.validation, result.metrics.test):
        assert set(window) == {"lightgbm", "logreg", "ensemble"}
        for m in window.values():
            assert set(m.model_dump()) == METRIC_KEYS
            assert 0.0 <= m.auprc <= 1.0
            assert 0.5 < m.roc_auc <= 1.0
            assert 0.0 <= m.recall_at_fpr_0_1pct <= m.recall_at_fpr_1pct <= 1.0
            assert 0.0 <= m.review_rate + m.decline_rate <= 1.0
    test = result.metrics.test
    assert test["ensemble"].auprc > 0.5
    assert test["ensemble"].roc_auc > 0.85
    assert test["ensemble"].rows == result.info.windows[2].rows
    assert result.info.code_version.git_commit == "test-commit"


def test_numpy_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(5_000) < 0.05).astype(np.int8)
    scores = np.round(rng.random(5_000) + 0.3 * y, 2)  # rounded: many ties
    assert average_precision(y, scores) == pytest.approx(average_precision_score(y, scores))
    assert roc_auc(y, scores) == pytest.approx(roc_auc_score(y, scores))
    assert recall_at_fpr(y, np.where(y == 1, 1.0, 0.0), 0.001) == 1.0


def test_calibration_is_strictly_increasing_with_no_floor(result: TrainResult) -> None:
    calibrator = result.ensemble.calibrator
    assert set(result.ensemble.calibration_log_loss) == {"centred_isotonic", "platt"}
    chosen = min(result.ensemble.calibration_log_loss.items(), key=lambda kv: kv[1])[0]
    assert calibrator.kind == chosen
    z = np.linspace(-30, 30, 2_000)
    calibrated = calibrator.apply(z)
    assert np.all(np.diff(calibrated) > 0)  # no ties anywhere, tails included
    assert calibrated.min() > 0.0
    assert calibrated.max() < 1.0
    assert all(w >= 0 for w in result.ensemble.combiner.weights)


@pytest.mark.parametrize("fit", [fit_calibrator, fit_platt_calibrator])
def test_calibrators_track_the_base_rate(fit: object) -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(-4.0, 2.0, 50_000)
    y = (rng.random(50_000) < 1 / (1 + np.exp(-z))).astype(np.int8)
    calibrated = fit(z, y).apply(z)  # type: ignore[operator]
    assert calibrated.mean() == pytest.approx(y.mean(), abs=0.002)
    top = z > 0
    assert calibrated[top].mean() == pytest.approx(y[top].mean(), abs=0.05)


def test_isotonic_tails_untie_the_rows_a_floor_would_tie() -> None:
    """Half the rows score below every fraud: plain isotonic maps them all to exactly 0."""
    rng = np.random.default_rng(2)
    z = np.concatenate([rng.normal(-8.0, 1.0, 20_000), rng.normal(-2.0, 1.5, 20_000)])
    y = np.concatenate([np.zeros(20_000), rng.random(20_000) < 0.02]).astype(np.int8)
    calibrator = fit_calibrator(z, y)
    scores = calibrator.apply(z)
    assert calibrator.tail_slope is not None
    assert min(calibrator.y) > 0.0
    _, counts = np.unique(scores, return_counts=True)
    assert counts.max() <= 2  # every row keeps its rank (float coincidences aside)
    assert scores[z < calibrator.x[0]].max() < 1e-4  # the tail stays near zero


def test_choosing_a_calibrator_scores_each_on_held_out_folds() -> None:
    rng = np.random.default_rng(4)
    z = rng.normal(-4.0, 2.0, 20_000)
    logistic = (rng.random(20_000) < 1 / (1 + np.exp(-z))).astype(np.int8)
    step = (rng.random(20_000) < np.where(z > -2.0, 0.3, 0.001)).astype(np.int8)
    platt, losses = choose_calibrator(z, logistic)
    assert platt.kind == "platt"
    assert losses["platt"] < losses["centred_isotonic"]
    isotonic, losses = choose_calibrator(z, step)  # a step no logistic curve follows
    assert isotonic.kind == "centred_isotonic"
    assert losses["centred_isotonic"] < losses["platt"]


def test_disagreement_reviews_leave_the_score_band_part_of_the_budget() -> None:
    rng = np.random.default_rng(5)
    n = 10_000
    members = {"a": rng.random(n), "b": rng.random(n)}  # members disagree on most rows
    budget = 0.005
    margin = fitting_margin(members, 0.3, budget * 0.5)
    spread = np.abs(members["a"] - members["b"])
    assert margin > 0.3
    assert np.mean(spread > margin) <= budget * 0.5
    scores = np.sort(rng.random(n))
    y = (rng.random(n) < scores**8).astype(np.int8)
    t = choose_thresholds(scores, y, spread > margin, budget, 0.5)
    assert t.validation_band_rate is not None
    assert t.validation_band_rate > 0  # never empty
    assert t.review < t.decline
    assert t.validation_review_rate <= budget


def test_a_trained_review_band_is_not_empty_and_within_budget(result: TrainResult) -> None:
    t = result.ensemble.thresholds
    assert t.review < t.decline
    assert t.validation_band_rate is not None
    assert t.validation_band_rate > 0
    assert t.validation_review_rate <= t.review_budget


def test_explain_returns_top_contributions(result: TrainResult) -> None:
    names = result.feature_spec.names
    rows = result.holdout_X[:3]
    top = explain(result.booster, rows, names, top_k=3)
    assert len(top) == 3
    assert all(len(r) == 3 for r in top)
    for row in top:
        sizes = [abs(v) for _, v in row]
        assert sizes == sorted(sizes, reverse=True)
        assert all(n in names for n, _ in row)
    explainer = PathExplainer(result.booster, list(names))
    full = explainer.top(rows, top_k=len(names))
    raw = np.asarray(result.booster.predict(rows, raw_score=True))
    assert np.allclose([sum(v for _, v in r) for r in full], raw - explainer.bias, atol=1e-4)
    # The features TreeSHAP ranks first are credited in the same direction by path attribution.
    shap = np.asarray(result.booster.predict(rows, pred_contrib=True))[:, :-1]
    path = explainer.contributions(rows)
    for i in range(len(rows)):
        lead = int(np.argmax(np.abs(shap[i])))
        assert np.sign(path[i, lead]) == np.sign(shap[i, lead]) or abs(path[i, lead]) < 0.05
    with pytest.raises(ModelLoadError, match="feature_spec order"):
        explainer.top(rows[:, :2])
    with pytest.raises(ModelLoadError, match="feature_spec names"):
        explain(result.booster, rows[:, :2], list(names[:2]))


def test_code_version_without_git(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRAUD_GIT_COMMIT")
    monkeypatch.setenv("PATH", "")
    assert code_version().git_commit == "unknown"


def _stops_at(scores: list[float], patience: int, min_rounds: int) -> tuple[int, int]:
    """(kept iteration, iteration it stopped at) for a sequence of validation scores."""
    import lightgbm as lgb  # noqa: PLC0415

    from fraudstream.training.members import _early_stopping  # noqa: PLC0415

    callback = _early_stopping(patience, min_rounds)
    for iteration, score in enumerate(scores):
        env = SimpleNamespace(iteration=iteration, end_iteration=len(scores),
                              evaluation_result_list=[("v", "ap", score, True)])  # fmt: skip
        try:
            callback(env)
        except lgb.callback.EarlyStopException as stop:
            return stop.best_iteration, iteration
    raise AssertionError("never stopped")


def test_early_stopping_keeps_no_round_before_the_minimum() -> None:
    # A lucky peak at round 1, then a long climb: what a validation window with a handful
    # of frauds looks like.
    scores = [0.5, 0.2, 0.2, 0.2, *[0.2 + 0.01 * i for i in range(20)], *[0.3] * 10]
    assert _stops_at(scores, patience=3, min_rounds=1) == (0, 3)  # LightGBM's own rule
    # the climb's top, and the stop patience rounds after it
    assert _stops_at(scores, patience=3, min_rounds=10) == (23, 26)
    assert _stops_at([0.1, 0.2, 0.3], patience=5, min_rounds=1) == (2, 2)  # ran out: the best


def test_contiguous_windows_are_views_and_others_copies() -> None:
    X = np.arange(20, dtype=np.float32).reshape(10, 2)
    view = take_rows(X, np.arange(3, 7))
    assert np.shares_memory(view, X)
    assert view.tolist() == X[3:7].tolist()
    picked = take_rows(X, np.array([1, 4, 5]))
    assert not np.shares_memory(picked, X)
    assert picked.tolist() == X[[1, 4, 5]].tolist()


def test_the_linear_member_fits_on_every_fraud_and_a_sample_of_the_rest() -> None:
    rng = np.random.default_rng(6)
    X = rng.random((5_000, 3)).astype(np.float32)
    y = (rng.random(5_000) < 0.02).astype(np.int8)
    Xs, ys = _at_most(X, y, 1_000, seed=1)
    assert len(ys) == 1_000
    assert ys.sum() == y.sum()  # every fraud kept
    assert _at_most(X, y, 1_000, seed=1)[0].tobytes() == Xs.tobytes()  # seeded
    assert _at_most(X, y, 10_000, seed=1)[0] is X  # small data unchanged
