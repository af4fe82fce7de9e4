"""Metric tables, and two versions compared on the same labelled window."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

from fraudstream.model.ensemble import ENSEMBLE, Thresholds
from fraudstream.model.metrics import ScoreMetrics, evaluate
from fraudstream.model.onnx_ensemble import OnnxEnsemble

METRIC_COLUMNS = (
    ("AUPRC", "auprc"),
    ("ROC-AUC", "roc_auc"),
    ("recall@0.1%FPR", "recall_at_fpr_0_1pct"),
    ("recall@1%FPR", "recall_at_fpr_1pct"),
    ("precision@budget", "precision_at_review_budget"),
    ("review rate", "review_rate"),
    ("decline rate", "decline_rate"),
    ("decline precision", "decline_precision"),
)


def fmt(value: float | None) -> str:
    """Four decimals, '-' for a missing value."""
    return "-" if value is None else f"{value:.4f}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def metrics_table(rows: dict[str, ScoreMetrics]) -> str:
    """A markdown table: one row per scorer, one column per metric."""
    lines = [_row(["scorer", *(label for label, _ in METRIC_COLUMNS)])]
    lines.append("|---" * (len(METRIC_COLUMNS) + 1) + "|")
    lines += [
        _row([name, *(fmt(getattr(m, key)) for _, key in METRIC_COLUMNS)])
        for name, m in rows.items()
    ]
    return "\n".join(lines)


class Comparison(BaseModel):
    """Metrics of versions `a` and `b` (ensemble and each member) on one window."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_name: str
    a: str
    b: str
    rows: int
    frauds: int
    metrics: dict[str, dict[str, ScoreMetrics]]  # version -> scorer -> metrics

    def delta(self, key: str) -> float | None:
        """Ensemble metric `key` of B minus A."""
        a, b = (getattr(self.metrics[v][ENSEMBLE], key) for v in (self.a, self.b))
        return None if a is None or b is None else float(b - a)

    def table(self) -> str:
        """Markdown: one row per metric; A and B per scorer, and B - A for the ensemble."""
        members = sorted((set(self.metrics[self.a]) & set(self.metrics[self.b])) - {ENSEMBLE})
        head = ["metric", "A ensemble", "B ensemble", "B - A"]
        head += [f"{v} {m}" for m in members for v in ("A", "B")]
        lines = [
            f"{self.model_name}: A = {self.a}, B = {self.b}; {self.rows} rows, "
            f"{self.frauds} frauds",
            "",
            _row(head),
            "|---" * len(head) + "|",
        ]
        for label, key in METRIC_COLUMNS:
            delta = self.delta(key)
            cells = [label]
            cells += [fmt(getattr(self.metrics[v][ENSEMBLE], key)) for v in (self.a, self.b)]
            cells.append("-" if delta is None else f"{delta:+.4f}")
            cells += [
                fmt(getattr(self.metrics[v][m], key)) for m in members for v in (self.a, self.b)
            ]
            lines.append(_row(cells))
        return "\n".join(lines)


def score_version(
    model: OnnxEnsemble,
    member_thresholds: dict[str, Thresholds],
    X: np.ndarray,
    y: np.ndarray,
) -> dict[str, ScoreMetrics]:
    """A version's ensemble and member metrics on (X, y), each with its own thresholds."""
    scores, members = model.predict(X)
    result = {
        name: evaluate(y, p, member_thresholds[name])
        for name, p in members.items()
        if name in member_thresholds
    }
    result[ENSEMBLE] = evaluate(y, scores, model.thresholds, model.disagreement(members))
    return result
