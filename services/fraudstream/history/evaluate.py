"""`fraudctl evaluate`: a registered version scored on a later labelled period through the
serving path, with the metrics the model card reports and those a fraud team tracks.

The labelled history becomes an in-memory archive on one Kafka partition (the serving
path on one partition computes training's features bit for bit, see
tests/unit/test_backtest.py), is replayed with warm-up on every row before `start`, and
the rows in [start, end) are scored by the version. Ground truth is the history's label
column, not the labels known at some time: this measures the model, not the label delay.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fraudstream.contracts import Label
from fraudstream.datasets import LabelledHistory
from fraudstream.history import layout
from fraudstream.history.backtest import Candidate, replay
from fraudstream.history.query import Archive
from fraudstream.history.report import pyplot
from fraudstream.history.rows import EPOCH
from fraudstream.model.ensemble import Thresholds
from fraudstream.model.metrics import ScoreMetrics, evaluate, pr_curve
from fraudstream.rules.engine import RulePack
from fraudstream.scoring.models import ModelSet

NO_RULES = RulePack.from_yaml("version: none\nrules: []\n", "no rules")
TOP_CARDS = 100
_FAR = datetime(9999, 1, 1, tzinfo=EPOCH.tzinfo)


@dataclass
class Evaluation:
    """What `fraudctl evaluate` prints (and writes with --json)."""

    model_version: str
    start: str
    end: str
    warmup_rows: int
    metrics: ScoreMetrics  # the model card's ensemble metrics, on this window
    card_precision_at_100: dict[str, float]  # per day: frauded cards among the top 100
    groups: dict[str, dict[str, float | int]]  # per scenario or label source
    pr_curve: dict[str, list[float]] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["metrics"] = self.metrics.model_dump()
        return out


def history_tables(history: LabelledHistory) -> tuple[pa.Table, pa.Table]:
    """(transactions, labels) as archive tables on one partition, in time order."""
    labels = sorted(history.labels, key=lambda label: label.labelled_at)
    lb = layout.table(Label, labels, [0] * len(labels), list(range(len(labels))),
                      [_ms(label.labelled_at) for label in labels])  # fmt: skip
    return history.table, lb


def _ms(when: datetime) -> int:
    return (when - EPOCH) // timedelta(milliseconds=1)


def run(
    history: LabelledHistory,
    models: ModelSet,
    start: datetime,
    end: datetime,
    *,
    groups: dict[str, str] | None = None,
) -> Evaluation:
    """Score `history`'s rows in [start, end) with `models.champion` after warm-up.
    `groups` maps transaction ids to a group (fraud scenario or label source)."""
    model = models.champion
    if model is None:
        raise ValueError("no model to evaluate")
    transactions, labels = history_tables(history)
    with Archive.from_tables(transactions=transactions, labels=labels) as archive:
        rows = archive.labelled_history(EPOCH, end, _FAR)
        fraud_labels = archive.fraud_labels(_FAR)
    replayed = replay(rows, fraud_labels, Candidate(NO_RULES, models), start, keep_features=True)
    if replayed.history.num_rows == 0 or replayed.features is None:
        raise ValueError(f"no transactions in [{start.isoformat()}, {end.isoformat()})")
    truth = dict(zip(history.table["transaction_id"].to_pylist(), history.y.tolist(),
                     strict=True))  # fmt: skip
    ids = replayed.history["transaction_id"].to_pylist()
    y = np.array([truth[i] for i in ids], dtype=np.int8)
    scores, _members, disagree = model.predict(replayed.features)
    precision, recall = pr_curve(y, scores)
    return Evaluation(
        model_version=model.version, start=start.isoformat(), end=end.isoformat(),
        warmup_rows=replayed.warmup_rows,
        metrics=evaluate(y, scores, model.ensemble.thresholds, disagree),
        card_precision_at_100=_card_precision(replayed.history, y, scores),
        groups=_groups(ids, y, scores, model.ensemble.thresholds, groups or {}),
        pr_curve={"precision": precision.tolist(), "recall": recall.tolist()},
    )  # fmt: skip


def _card_precision(rows: pa.Table, y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Per day, the share of frauded cards among the day's top cards by their highest score
    (the Fraud Detection Handbook's card precision@k: a team checks k cards a day)."""
    days = pc.strftime(rows["event_time"], "%Y-%m-%d").to_pylist()
    cards = rows["card_token"].to_pylist()
    best: dict[str, dict[str, tuple[float, bool]]] = {}
    for day, card, score, fraud in zip(days, cards, scores.tolist(), y.tolist(), strict=True):
        seen = best.setdefault(day, {})
        top, frauded = seen.get(card, (-1.0, False))
        seen[card] = (max(top, score), frauded or bool(fraud))
    out = {}
    for day, by_card in sorted(best.items()):
        ranked = sorted(by_card.values(), key=lambda v: -v[0])[:TOP_CARDS]
        out[day] = sum(f for _, f in ranked) / len(ranked)
    return out


def _groups(ids: list[str], y: np.ndarray, scores: np.ndarray, thresholds: Thresholds,
            groups: dict[str, str]) -> dict[str, dict[str, float | int]]:  # fmt: skip
    """Per group of fraud: how much the model declines and sends to review."""
    decline, review = thresholds.decline, thresholds.review
    out: dict[str, dict[str, float | int]] = {}
    names = np.array([groups.get(i, "") for i in ids], dtype=object)
    for name in sorted({n for n, fraud in zip(names.tolist(), y.tolist(), strict=True)
                        if fraud and n}):  # fmt: skip
        mine = (names == name) & (y == 1)
        n = int(mine.sum())
        out[name] = {
            "frauds": n,
            "declined": float((scores[mine] >= decline).mean()),
            "reviewed": float(((scores[mine] >= review) & (scores[mine] < decline)).mean()),
        }
    return out


def render(result: Evaluation) -> str:
    """The evaluation as terminal lines."""
    m = result.metrics
    days = list(result.card_precision_at_100.values())
    lines = [
        f"model {result.model_version} on [{result.start}, {result.end}) after "
        f"{result.warmup_rows:,} rows of warm-up: {m.rows:,} transactions, {m.frauds:,} fraud",
        f"AP {m.auprc:.4f}  ROC AUC {m.roc_auc:.4f}  recall@0.1%FPR {m.recall_at_fpr_0_1pct:.4f}"
        f"  recall@1%FPR {m.recall_at_fpr_1pct:.4f}",
        f"decline rate {m.decline_rate:.3%} (precision "
        f"{'-' if m.decline_precision is None else f'{m.decline_precision:.2%}'}), review rate "
        f"{m.review_rate:.3%}, precision at the review budget {m.precision_at_review_budget:.2%}",
        f"card precision@{TOP_CARDS} per day: mean {np.mean(days):.3f} over {len(days)} days",
    ]  # fmt: skip
    if result.groups:
        lines.append("per group: frauds, share declined, share sent to review")
        lines += [f"  {name:<22} {g['frauds']:>6,}  {g['declined']:7.2%}  {g['reviewed']:7.2%}"
                  for name, g in result.groups.items()]  # fmt: skip
    return "\n".join(lines)


def plot(result: Evaluation, path: Path) -> Path:
    """The precision-recall curve of the evaluated window as a PNG."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 4.5))
    axes.plot(result.pr_curve["recall"], result.pr_curve["precision"], drawstyle="steps-post")
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
             title=f"{result.model_version}: AP {result.metrics.auprc:.3f}")  # fmt: skip
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
