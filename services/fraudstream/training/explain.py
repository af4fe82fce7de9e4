"""Per-row explanations: LightGBM SHAP-style contributions (`pred_contrib=True`), on demand."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np

from fraudstream.training.errors import ModelLoadError


def load_booster(model_file: str | Path) -> lgb.Booster:
    """The LightGBM member from a version directory's `lightgbm.txt`."""
    path = Path(model_file)
    if not path.is_file():
        raise ModelLoadError(f"{path} does not exist: pass a version's lightgbm.txt")
    return lgb.Booster(model_file=str(path))


def explain(
    booster_or_model_file: lgb.Booster | str | Path,
    X_rows: np.ndarray,
    feature_names: list[str],
    top_k: int = 5,
) -> list[list[tuple[str, float]]]:
    """The `top_k` features pushing each row's LightGBM log-odds most, largest |value| first.

    Contributions are in log-odds of the LightGBM member (positive = towards fraud); the
    bias term is left out. Ties are broken by feature order, so output is deterministic.
    """
    booster = (
        booster_or_model_file
        if isinstance(booster_or_model_file, lgb.Booster)
        else load_booster(booster_or_model_file)
    )
    rows = np.atleast_2d(np.asarray(X_rows, dtype=np.float32))
    if rows.shape[1] != len(feature_names) or len(feature_names) != booster.num_feature():
        raise ModelLoadError(
            f"rows have {rows.shape[1]} columns, names {len(feature_names)}, the model expects "
            f"{booster.num_feature()}: pass rows in the model's feature_spec order"
        )
    contrib = np.asarray(booster.predict(rows, pred_contrib=True))[:, :-1]
    order = np.argsort(-np.abs(contrib), axis=1, kind="stable")[:, :top_k]
    return [[(feature_names[j], float(contrib[i, j])) for j in order[i]] for i in range(len(rows))]
