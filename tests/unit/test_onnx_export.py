"""ONNX export: parity with the training libraries and the serving-side ensemble."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import lightgbm as lgb
import numpy as np
import onnx
import pytest

from fraudstream.model.errors import ModelLoadError
from fraudstream.model.metrics import ParityResult
from fraudstream.model.onnx_ensemble import OnnxEnsemble
from fraudstream.model.train_config import LightGBMParams, TrainConfig
from fraudstream.training import export
from fraudstream.training.errors import ExportError
from fraudstream.training.export import ParityBounds, export_onnx
from fraudstream.training.members import float32_thresholds
from fraudstream.training.synthetic import synthetic_training_data
from fraudstream.training.train import TrainResult, train

SMALL = TrainConfig(
    seed=11,
    lightgbm=LightGBMParams(
        num_leaves=15, num_boost_round=80, early_stopping_rounds=15, min_child_samples=20
    ),
    parity_rows=500,
)


@pytest.fixture(scope="module")
def result() -> Iterator[TrainResult]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRAUD_GIT_COMMIT", "test-commit")
        yield train(synthetic_training_data(20_000, n_features=12, seed=5), SMALL)


@pytest.fixture(scope="module")
def exported(
    result: TrainResult, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, ParityResult]]:
    out = tmp_path_factory.mktemp("export")
    return out, export_onnx(result, out)


def test_export_writes_the_serving_files(exported: tuple[Path, dict[str, ParityResult]]) -> None:
    out, _ = exported
    names = {p.name for p in out.iterdir()}
    expected = {"lightgbm.onnx", "logreg.onnx", "lightgbm.txt", "ensemble.json"}
    assert names >= expected | {"feature_spec.json"}
    for member in ("lightgbm.onnx", "logreg.onnx"):
        graph = onnx.load(out / member).graph
        assert [i.name for i in graph.input] == ["features"]
        assert [o.name for o in graph.output] == ["probabilities"]


def test_parity_within_bound(exported: tuple[Path, dict[str, ParityResult]]) -> None:
    _, parity = exported
    assert set(parity) == {"lightgbm", "logreg", "ensemble"}
    for name, report in parity.items():
        assert report.rows == SMALL.parity_rows
        assert report.max_abs_diff <= report.bound <= (5e-2 if name == "ensemble" else 1e-4)
        assert report.max_abs_diff < 1e-5  # members agree far inside their bounds here


def test_onnx_ensemble_equals_the_python_ensemble(
    result: TrainResult, exported: tuple[Path, dict[str, ParityResult]]
) -> None:
    model = OnnxEnsemble.load(exported[0])
    X = result.holdout_X
    scores, members = model.predict(X)
    expected_scores, expected_members = result.predict(X)
    assert np.allclose(scores, expected_scores, rtol=0, atol=1e-5)
    for name, values in expected_members.items():
        assert np.allclose(members[name], values, rtol=0, atol=1e-5)
    assert model.thresholds == result.ensemble.thresholds
    assert model.feature_names == result.feature_spec.names
    raw = model.predict_raw(X)
    assert raw["lightgbm"].dtype == np.float32
    assert raw["lightgbm"].shape == (len(X),)


def test_serving_emits_no_warnings_or_logs(
    result: TrainResult,
    exported: tuple[Path, dict[str, ParityResult]],
    capfd: pytest.CaptureFixture[str],
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = OnnxEnsemble.load(exported[0])
        for rows in (result.holdout_X, result.holdout_X[:1], result.holdout_X[:0]):
            model.predict(rows)
    assert caught == []
    assert capfd.readouterr() == ("", "")


def test_empty_batch_and_wrong_width(
    result: TrainResult, exported: tuple[Path, dict[str, ParityResult]]
) -> None:
    model = OnnxEnsemble.load(exported[0])
    scores, members = model.predict(result.holdout_X[:0])
    assert scores.shape == (0,)
    assert set(members) == {"lightgbm", "logreg"}
    with pytest.raises(ModelLoadError, match="12 feature columns"):
        model.predict(result.holdout_X[:, :5])


def test_loading_a_non_version_directory_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="model version directory"):
        OnnxEnsemble.load(tmp_path)


def test_parity_failure_raises_export_error(
    result: TrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    X = result.holdout_X
    y = (np.nan_to_num(X[:, 0]) > 0).astype(np.int8)
    params = {"objective": "binary", "verbosity": -1, "num_threads": 1, "seed": 1}
    other = lgb.train(params, lgb.Dataset(X, y), num_boost_round=3)
    convert = export.lightgbm_to_onnx
    # a converter that exports different trees than the booster the ensemble scores with
    monkeypatch.setattr(export, "lightgbm_to_onnx", lambda _booster, n: convert(other, n))
    with pytest.raises(ExportError, match="differs from the training library"):
        export.export_onnx(result, tmp_path, ParityBounds())


def test_thresholds_snap_to_float32_without_changing_predictions() -> None:
    rng = np.random.default_rng(0)
    # Large, densely spaced values: float64 split midpoints fall between float32 neighbours.
    x = (1e6 + rng.integers(0, 2000, size=(4000, 3)) * 0.0625).astype(np.float32)
    y = (x[:, 0] + rng.normal(0, 20, 4000) > 1e6 + 62).astype(int)
    params = {"objective": "binary", "verbose": -1, "num_threads": 1, "seed": 1}
    booster = lgb.train(params, lgb.Dataset(x, label=y), num_boost_round=20)
    snapped = lgb.Booster(model_str=float32_thresholds(booster.model_to_string()))
    assert np.array_equal(booster.predict(x), snapped.predict(x))
    thresholds = [
        float(v)
        for line in snapped.model_to_string().splitlines()
        if line.startswith("threshold=")
        for v in line.removeprefix("threshold=").split()
    ]
    assert thresholds
    assert all(float(np.float32(t)) == t for t in thresholds)


def test_only_float_noise_at_a_threshold_may_change_a_decision(
    exported: tuple[Path, dict[str, ParityResult]],
) -> None:
    served = OnnxEnsemble.load(exported[0])
    t = served.thresholds
    members = {m.name: np.full(200, 0.01) for m in served.spec.members}
    expected = np.full(200, t.review / 2)  # all approved
    check = export._check_same_decisions
    noisy = expected.copy()
    noisy[0] = t.review  # one row of 200 crosses the review threshold: boundary noise
    check(served, noisy, members, expected, members)
    noisy[:3] = t.review  # 1.5 % of rows: more than noise
    with pytest.raises(ExportError, match=r"3 of 200 held-out rows get another decision"):
        check(served, noisy, members, expected, members)
    moved = np.full(200, t.decline + 0.01)  # both sides above decline: same decision
    check(served, moved, members, moved.copy(), members)
