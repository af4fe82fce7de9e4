"""One retrain: the archive's labelled history as of now, a challenger trained on it with
the training pipeline, champion and challenger replayed through the backtester on the
same later window, the challenger registered with that comparison.

Labels count only if they were given by `as_of` (the archive's `labelled_at`): a rerun
later sees more labels, never a label from its future. Unlabelled rows of the windows
are taken as legitimate; the maturity margin (`trainer_mature_days`) keeps the rows
whose fraud is mostly still unreported out of both training and evaluation.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from fraudstream.contracts import Label
from fraudstream.datasets import LabelledHistory
from fraudstream.errors import FraudStreamError
from fraudstream.features.spec import FeatureConfig
from fraudstream.history import report as reporting
from fraudstream.history.backtest import Candidate, Window, replay
from fraudstream.history.evaluate import NO_RULES
from fraudstream.history.query import Archive
from fraudstream.model.train_config import train_config
from fraudstream.registry import Registry
from fraudstream.retrain.settings import TrainerSettings
from fraudstream.retrain.stats import difference
from fraudstream.retrain.windows import RetrainWindows
from fraudstream.rules.engine import RulePack
from fraudstream.scoring.decide import DecisionPolicy
from fraudstream.scoring.models import single_model_set
from fraudstream.trainer import StageTimes, TrainWindow, train_and_register

_log = logging.getLogger(__name__)
EVALUATION_CONFIDENCE = 0.95
Progress = Callable[[str], None]


class SideResult(BaseModel):
    """What one model decided on the evaluation window (through the backtester)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    decisions: int
    frauds: int
    declines: int
    fraud_declined: int
    reviews: int
    recall: float
    decline_precision: float | None
    review_rate: float
    decline_rate: float
    average_precision: float | None
    prevented_amount: float


class Evaluation(BaseModel):
    """Champion and challenger on the same labelled window; stored beside the version
    (`Registry.record_evaluation`) and printed by `fraudctl models show`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_name: str
    challenger: SideResult
    champion: SideResult | None
    recall_difference: dict[str, float | int] | None  # challenger - champion, with CI
    precision_difference: dict[str, float | int] | None
    window_start: datetime
    window_end: datetime
    as_of: datetime
    warmup_transactions: int
    rules_version: str
    review_budget: float | None
    triggers: list[str]
    evaluated_at: datetime
    champion_trained_until: datetime | None = Field(
        default=None, description="End of the champion's own data windows (its model card)."
    )

    @property
    def champion_in_sample(self) -> bool:
        """The window overlaps the champion's training data: the comparison flatters it."""
        until = self.champion_trained_until
        return until is not None and until > self.window_start

    def summary(self) -> str:
        """One line: each side's recall and decline precision, and the difference."""

        def side(name: str, s: SideResult) -> str:
            precision = "n/a" if s.decline_precision is None else f"{s.decline_precision:.3f}"
            return (f"{name} {s.version}: recall {s.recall:.3f}, decline precision "
                    f"{precision}, review {s.review_rate:.2%}")  # fmt: skip

        parts = [side("challenger", self.challenger)]
        if self.champion is not None:
            parts.append(side("champion", self.champion))
        if self.recall_difference is not None:
            d = self.recall_difference
            parts.append(f"recall difference {d['estimate']:+.3f} [{d['low']:+.3f}, "
                         f"{d['high']:+.3f}] at {d['confidence']:.0%}")  # fmt: skip
        if self.champion_in_sample:
            until = self.champion_trained_until
            parts.append(f"the champion trained on data until {until:%Y-%m-%d}, inside this "
                         "window")  # fmt: skip
        return f"{self.challenger.decisions:,} labelled-window transactions; " + "; ".join(parts)


@dataclass
class RetrainResult:
    """What a retrain did: `registered` a version, or `skipped` with the reason."""

    outcome: str
    reason: str = ""
    version: str | None = None
    promoted: bool = False  # the first model of its name becomes champion
    evaluation: Evaluation | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def archived_history(rows: pa.Table, labels: pa.Table) -> LabelledHistory:
    """The archive's `labelled_history` rows and `labels_as_of` labels as a training set:
    a row is fraud when its latest label by then says so, else legitimate."""
    y = np.asarray(pc.fill_null(rows["is_fraud"], False).to_numpy(zero_copy_only=False), np.int8)
    names = [n for n in Label.model_fields if n in labels.column_names]
    parsed = [Label.model_validate(row, strict=False) for row in labels.select(names).to_pylist()]
    return LabelledHistory(rows, y, parsed, Counter())


def plan_windows(settings: TrainerSettings, newest: datetime, as_of: datetime) -> RetrainWindows:
    """The windows a retrain with `settings` reads, given the archive's newest transaction."""
    return RetrainWindows.plan(
        newest, as_of, train_days=settings.trainer_train_days,
        eval_days=settings.trainer_eval_days, warmup_days=settings.trainer_warmup_days,
        mature_days=settings.trainer_mature_days,
    )  # fmt: skip


def retrain(
    settings: TrainerSettings,
    archive: Archive,
    registry: Registry,
    *,
    triggers: list[str],
    progress: Progress = _log.info,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> RetrainResult:
    """Train a challenger on the archive as of now and register it with its evaluation."""
    times, started = StageTimes(), time.perf_counter()
    newest = archive.newest_transaction_time()
    if newest is None:
        return RetrainResult("skipped", "the archive holds no transactions yet")
    windows = plan_windows(settings, newest, now())
    progress(f"reading the archive: {windows.describe()}")
    rows = archive.labelled_history(windows.warmup_start, windows.eval_end, windows.as_of)
    labels = archive.labels_as_of(windows.as_of, windows.warmup_start, windows.eval_end)
    fraud_labels = archive.fraud_labels(windows.as_of)
    history = archived_history(rows, labels)
    started = times.record("read", started)
    counts = _window_counts(history, windows)
    progress(f"read {len(history):,} transactions and {len(history.labels):,} labels in "
             f"{times.seconds['read']:.1f} s: {counts}")  # fmt: skip
    if counts["train_frauds"] < settings.trainer_min_frauds:
        return RetrainResult("skipped", f"{counts['train_frauds']} labelled frauds in the "
                             f"training window, fewer than trainer_min_frauds "
                             f"({settings.trainer_min_frauds})", seconds=times.seconds)  # fmt: skip
    if counts["eval_rows"] == 0:
        return RetrainResult("skipped", "no transactions in the evaluation window",
                             seconds=times.seconds)  # fmt: skip
    progress(f"features and training on {counts['train_rows']:,} rows "
             f"({counts['train_frauds']:,} frauds)")  # fmt: skip
    champion = registry.champion(settings.model_name) if _has_model(registry, settings) else None
    outcome = train_and_register(
        history, features=FeatureConfig.from_yaml(settings.features_file),
        config=train_config(_existing(settings.trainer_config)), registry=registry,
        name=settings.model_name, times=times,
        window=TrainWindow(windows.train_start, windows.eval_start),
        note=_note(triggers),
    )  # fmt: skip
    version = outcome.version.version
    progress(f"registered challenger {version}; replaying the evaluation window")
    started = time.perf_counter()
    evaluation = evaluate(
        settings, registry, rows, fraud_labels, windows, challenger=version,
        champion=champion.version if champion is not None else None, triggers=triggers,
        evaluated_at=now(),
    )  # fmt: skip
    registry.record_evaluation(settings.model_name, version, evaluation.model_dump_json(indent=2))
    times.record("evaluate", started)
    progress(evaluation.summary())
    return RetrainResult("registered", version=version, promoted=outcome.promoted,
                         evaluation=evaluation, seconds=times.seconds)  # fmt: skip


def evaluate(
    settings: TrainerSettings, registry: Registry, rows: pa.Table, fraud_labels: pa.Table,
    windows: RetrainWindows, *, challenger: str, champion: str | None, triggers: list[str],
    evaluated_at: datetime,
) -> Evaluation:  # fmt: skip
    """Both versions replayed with the same rule pack and policy on the evaluation window."""
    rules = _rule_pack(settings)
    window = Window(windows.eval_start, windows.eval_end, windows.as_of)
    sides: dict[str, SideResult] = {}
    warmup, budget = 0, None
    for role, version in (("champion", champion), ("challenger", challenger)):
        if version is None:
            continue
        candidate = Candidate(rules, single_model_set(registry, settings.model_name, version),
                              DecisionPolicy())  # fmt: skip
        replayed = replay(rows, fraud_labels, candidate, windows.eval_start)
        report = reporting.build(replayed, candidate, window, examples=0)
        sides[role] = _side(version, report.sides[reporting.CANDIDATE])
        warmup, budget = replayed.warmup_rows, candidate.review_budget
    new, old = sides["challenger"], sides.get("champion")
    return Evaluation(
        model_name=settings.model_name, challenger=new, champion=old,
        recall_difference=None if old is None else difference(
            old.fraud_declined, old.frauds, new.fraud_declined, new.frauds,
            EVALUATION_CONFIDENCE).to_dict(),
        precision_difference=None if old is None else difference(
            old.fraud_declined, old.declines, new.fraud_declined, new.declines,
            EVALUATION_CONFIDENCE).to_dict(),
        window_start=windows.eval_start, window_end=windows.eval_end, as_of=windows.as_of,
        warmup_transactions=warmup, rules_version=rules.version,
        review_budget=budget,
        triggers=triggers, evaluated_at=evaluated_at,
        champion_trained_until=None if champion is None else _trained_until(
            registry, settings.model_name, champion),
    )  # fmt: skip


def _trained_until(registry: Registry, name: str, version: str) -> datetime | None:
    """The end of a version's data windows (naive times in training.json are UTC)."""
    windows = registry.show(name, version).training.windows
    ends = [w.end if w.end.tzinfo else w.end.replace(tzinfo=UTC) for w in windows]
    return max(ends, default=None)


def _side(version: str, outcome: reporting.Outcome) -> SideResult:
    return SideResult(
        version=version, decisions=outcome.decisions, frauds=outcome.fraud,
        declines=outcome.counts["decline"], fraud_declined=outcome.fraud_declined,
        reviews=outcome.counts["review"], recall=outcome.recall,
        decline_precision=outcome.decline_precision, review_rate=outcome.rates["review"],
        decline_rate=outcome.rates["decline"], average_precision=outcome.average_precision,
        prevented_amount=outcome.prevented_amount,
    )  # fmt: skip


def _window_counts(history: LabelledHistory, windows: RetrainWindows) -> dict[str, int]:
    t = history.table["event_time"]
    train = pc.and_(pc.greater_equal(t, pa.scalar(windows.train_start)),
                    pc.less(t, pa.scalar(windows.eval_start)))  # fmt: skip
    evaluated = pc.greater_equal(t, pa.scalar(windows.eval_start))
    train_mask = np.asarray(train.to_numpy(zero_copy_only=False), bool)
    eval_mask = np.asarray(evaluated.to_numpy(zero_copy_only=False), bool)
    return {
        "warmup_rows": int((~train_mask & ~eval_mask).sum()),
        "train_rows": int(train_mask.sum()), "train_frauds": int(history.y[train_mask].sum()),
        "eval_rows": int(eval_mask.sum()), "eval_frauds": int(history.y[eval_mask].sum()),
    }  # fmt: skip


def _rule_pack(settings: TrainerSettings) -> RulePack:
    path = settings.rules_file
    if not path.is_file():
        _log.warning("rule pack %s not found: both sides are replayed without rules", path)
        return NO_RULES
    return RulePack.from_yaml(path.read_text(encoding="utf-8"), str(path))


def _existing(path: Path | None) -> Path | None:
    return path if path is not None and path.is_file() else None


def _has_model(registry: Registry, settings: TrainerSettings) -> bool:
    return settings.model_name in registry.model_names()


def _note(triggers: list[str]) -> str:
    if not triggers:
        return "retrained on the archive"
    more = f" (+{len(triggers) - 1} coalesced)" if len(triggers) > 1 else ""
    return f"retrained on the archive for trigger {triggers[0]}{more}"


def as_dict(result: RetrainResult) -> dict[str, Any]:
    """The result as JSON-ready values (for `fraudctl retrain --now --json`)."""
    out = asdict(result)
    out["evaluation"] = result.evaluation.model_dump(mode="json") if result.evaluation else None
    return out


class RetrainError(FraudStreamError):
    """A retrain cannot start (no archive, bad configuration)."""
