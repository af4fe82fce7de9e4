"""Evaluation metrics in plain numpy (the registry's `compare` runs without scikit-learn).

`average_precision` and `roc_auc` match scikit-learn's definitions (step-wise AP, tied
scores handled as one threshold); the unit tests check them against scikit-learn.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

from fraudstream.model.ensemble import Thresholds, decline_mask, review_mask


class ScoreMetrics(BaseModel):
    """One scorer (member or ensemble) on one labelled window."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rows: int
    frauds: int
    auprc: float
    roc_auc: float
    recall_at_fpr_0_1pct: float
    recall_at_fpr_1pct: float
    precision_at_review_budget: float
    review_rate: float
    decline_rate: float
    decline_precision: float | None


class ParityResult(BaseModel):
    """ONNX output vs the training library on held-out rows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rows: int
    max_abs_diff: float
    bound: float


class MetricsReport(BaseModel):
    """`metrics.json`: every member and the ensemble on validation and test windows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    validation: dict[str, ScoreMetrics]
    test: dict[str, ScoreMetrics]
    member_thresholds: dict[str, Thresholds]
    lightgbm_best_iteration: int
    parity: dict[str, ParityResult] = {}


def _ranked(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative true and false positives at each distinct threshold, highest first."""
    order = np.argsort(-scores, kind="stable")
    s, hits = scores[order], y[order].astype(np.int64)
    ends = np.append(np.flatnonzero(np.diff(s) != 0), len(s) - 1)
    tp = np.cumsum(hits)[ends]
    fp = ends + 1 - tp
    return tp, fp


def average_precision(y: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve as sum over thresholds of dRecall * precision."""
    tp, fp = _ranked(y, scores)
    if tp[-1] == 0:
        return 0.0
    recall = tp / tp[-1]
    precision = tp / (tp + fp)
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (trapezoidal, so ties count one half)."""
    tp, fp = _ranked(y, scores)
    if tp[-1] == 0 or fp[-1] == 0:
        return float("nan")
    tpr = np.concatenate(([0.0], tp / tp[-1]))
    fpr = np.concatenate(([0.0], fp / fp[-1]))
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def recall_at_fpr(y: np.ndarray, scores: np.ndarray, max_fpr: float) -> float:
    """Best recall over thresholds whose false-positive rate is at most `max_fpr`."""
    tp, fp = _ranked(y, scores)
    if tp[-1] == 0:
        return 0.0
    allowed = fp <= max_fpr * max(int(fp[-1]), 1)
    return float(tp[allowed].max() / tp[-1]) if allowed.any() else 0.0


def precision_at_top(y: np.ndarray, scores: np.ndarray, share: float) -> float:
    """Precision among the `share` of rows with the highest scores (at least one row)."""
    k = max(1, round(share * len(scores)))
    top = np.argsort(-scores, kind="stable")[:k]
    return float(y[top].mean())


def pr_curve(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at each distinct threshold, highest threshold first."""
    tp, fp = _ranked(y, scores)
    return tp / (tp + fp), tp / max(int(tp[-1]), 1)


def evaluate(
    y: np.ndarray,
    scores: np.ndarray,
    thresholds: Thresholds,
    disagree: np.ndarray | None = None,
) -> ScoreMetrics:
    """All metrics for one scorer; `disagree` (ensemble only) adds disagreement reviews."""
    flags = np.zeros(len(scores), dtype=bool) if disagree is None else disagree
    declined = decline_mask(scores, thresholds)
    return ScoreMetrics(
        rows=len(y),
        frauds=int(y.sum()),
        auprc=average_precision(y, scores),
        roc_auc=roc_auc(y, scores),
        recall_at_fpr_0_1pct=recall_at_fpr(y, scores, 0.001),
        recall_at_fpr_1pct=recall_at_fpr(y, scores, 0.01),
        precision_at_review_budget=precision_at_top(y, scores, thresholds.review_budget),
        review_rate=float(review_mask(scores, flags, thresholds).mean()),
        decline_rate=float(declined.mean()),
        decline_precision=float(y[declined].mean()) if declined.any() else None,
    )
