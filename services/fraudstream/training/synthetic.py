"""Synthetic labelled data for tests, demos and benchmarks (not the transaction simulator)."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import make_classification

from fraudstream.model.feature_spec import FeatureSpecDoc
from fraudstream.training.data import TrainingData

START = np.datetime64("2025-01-01T00:00:00", "us")


def synthetic_training_data(
    n_rows: int,
    *,
    n_features: int = 30,
    fraud_rate: float = 0.01,
    seed: int = 0,
    missing_rate: float = 0.02,
    days: float = 90.0,
) -> TrainingData:
    """A `make_classification` problem with ~`fraud_rate` positives, NaNs and rising times."""
    X, y = make_classification(
        n_samples=n_rows,
        n_features=n_features,
        n_informative=min(10, n_features),
        n_redundant=min(4, max(n_features - 10, 0)),
        weights=[1.0 - fraud_rate],
        flip_y=0.001,
        class_sep=1.0,
        random_state=seed,
    )
    rng = np.random.default_rng(seed)
    X = X.astype(np.float32)
    X[rng.random(X.shape) < missing_rate] = np.nan
    seconds = np.sort(rng.uniform(0.0, days * 86_400.0, size=n_rows))
    names = [f"f{i:02d}" for i in range(n_features)]
    return TrainingData(
        X=X,
        y=y.astype(np.int8),
        event_time=START + np.round(seconds * 1e6).astype("int64").astype("timedelta64[us]"),
        feature_spec=FeatureSpecDoc(names=names, source={"generator": "make_classification"}),
    )
