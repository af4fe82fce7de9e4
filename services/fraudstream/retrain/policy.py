"""The promotion policy (`config/promotion.yaml`): a challenger's way from candidate to
champion, each step judged on evidence in the archive and made through the registry, so
it is an event on `fraud.models` and a line in `fraudctl models history`.

- candidate -> shadow: when no version is in shadow, the newest candidate the trainer
  evaluated, unless that evaluation shows it clearly worse (the recall difference's upper
  bound below `-offline.max_recall_loss`): then it is retired. An evaluation window the
  champion itself trained on flatters the champion, so it retires nothing. Older candidates of the
  trainer are retired as superseded.
- shadow -> canary at `canary.share`: once it has scored `shadow.events` decisions beside
  the champion and no version is in canary; retired after `shadow.max_hours` without.
- canary -> champion, or retired: a fixed-horizon test on labelled canary traffic (below).
- champion -> rolled back: for `probation.hours` after the trainer promoted it, when its
  precision alert's condition holds (`config/drift.yaml` `precision`: the fraud share of
  its latest settled declines below the floor, a decline settling when labelled or after
  `join.ttl_days`), judged on the archive rather than on the monitor's state.

The canary test. Cards are split between canary and champion by a hash, so the card is
the unit of the experiment: each arm's cards are an independent sample, while one card's
payments are not (a fraud incident is several payments of one card, and the first run
of tests/integration/test_retraining_loop.py had 14 of 15 frauds on one arm). So each arm
counts cards: fraud cards (with a labelled fraud), declined cards, and caught cards (a
fraud of theirs declined); recall is caught / fraud cards, decline precision caught /
declined cards. A decision counts once its event time is `canary.label_wait_hours`
behind the newest one (younger ones mostly lack their label yet); labels are those
known now, and an unlabelled decision counts as legitimate on both arms alike. When each
arm holds `canary.min_frauds` fraud cards and `canary.min_declines` declined cards, the
test runs, once: the canary is promoted when, at
`canary.confidence`, the lower bound of Newcombe's interval on the recall difference
(canary - champion) is at least `canary.recall_margin`, the lower bound on the
decline-precision difference at least `-canary.precision_tolerance`, and the canary's review
rate stays within the champion's review budget times `1 + canary.review_tolerance`;
otherwise it is retired. One planned look keeps the
stated confidence: re-testing at every check until an interval happens to clear would
not. A canary that never reaches the sample in `canary.max_hours` is retired.

Only versions with a trainer evaluation (`Registry.evaluation`) are moved; versions
registered by hand are left to people.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from fraudstream import config_files
from fraudstream.contracts import Action, ModelEvent, ModelEventType
from fraudstream.drift.config import JoinConfig, MonitorConfig, PrecisionConfig
from fraudstream.history.query import Archive
from fraudstream.registry import Registry, Stage
from fraudstream.retrain.job import Evaluation
from fraudstream.retrain.settings import TrainerSettings
from fraudstream.retrain.stats import Difference, difference

_log = logging.getLogger(__name__)
ACTOR = "trainer"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OfflineGate(_Frozen):
    """The trainer's own evaluation, before any traffic."""

    max_recall_loss: float = Field(
        default=0.02, ge=0, le=1,
        description="Retired at once when the recall difference's upper bound is below -this.",
    )  # fmt: skip


class ShadowStage(_Frozen):
    """Scored beside the champion on all traffic, deciding nothing."""

    events: int = Field(default=20_000, ge=1, description="Decisions it scores, then canary.")
    max_hours: float = Field(default=72.0, gt=0, description="Retired when not reached by then.")


class CanaryStage(_Frozen):
    """Deciding for a share of cards; promoted or retired by one test."""

    share: float = Field(default=0.1, gt=0, le=1, description="Share of cards it decides.")
    label_wait_hours: float = Field(
        default=72.0, ge=0, description="Decisions this much younger than the newest wait."
    )
    min_frauds: int = Field(default=200, ge=1, description="Fraud cards per arm to test.")
    min_declines: int = Field(default=300, ge=0, description="And declined cards per arm.")
    confidence: float = Field(default=0.95, gt=0, lt=1)
    recall_margin: float = Field(
        default=0.0, ge=-1, le=1, description="Recall gain the interval's lower bound must beat."
    )
    precision_tolerance: float = Field(
        default=0.1, ge=0, le=2, description="Decline-precision loss the lower bound may show."
    )
    review_tolerance: float = Field(
        default=0.2, ge=0, description="Review rate allowed over the budget, relatively."
    )
    max_hours: float = Field(default=336.0, gt=0, description="Retired when untested by then.")


class Probation(_Frozen):
    """After the trainer promoted a version: rolled back on its precision alert."""

    hours: float = Field(default=168.0, ge=0)


class PromotionConfig(_Frozen):
    """The whole policy; `config/promotion.yaml` holds the defaults with comments."""

    offline: OfflineGate = OfflineGate()
    shadow: ShadowStage = ShadowStage()
    canary: CanaryStage = CanaryStage()
    probation: Probation = Probation()

    @classmethod
    def from_yaml(cls, path: str | Path) -> PromotionConfig:
        """The file's settings over the defaults; a clear error naming the file otherwise."""
        return config_files.load(cls, path, "promotion config")


@dataclass(frozen=True)
class Step:
    """One change the policy makes: `stage` for `version`, or a rollback (`stage` None)."""

    version: str
    stage: Stage | None
    note: str
    canary_share: float | None = None


@dataclass(frozen=True)
class Arm:
    """One model's decisions on canary traffic, with the labels known now: payments for
    the review rate, cards (the unit the traffic is split by) for recall and precision."""

    decisions: int
    reviews: int
    fraud_cards: int  # with a labelled fraud
    declined_cards: int  # with a decline
    caught_cards: int  # with a labelled fraud declined

    @property
    def review_rate(self) -> float:
        return self.reviews / self.decisions if self.decisions else 0.0


@dataclass(frozen=True)
class CanaryTest:
    """The canary test's inputs and result."""

    canary: Arm
    champion: Arm
    recall: Difference
    precision: Difference
    review_limit: float
    passed: bool

    def describe(self) -> str:
        r, p = self.recall, self.precision
        return (f"canary test at {r.confidence:.0%} on {self.canary.fraud_cards}+"
                f"{self.champion.fraud_cards} fraud cards: recall {r.estimate:+.3f} "
                f"[{r.low:+.3f}, {r.high:+.3f}], decline precision {p.estimate:+.3f} "
                f"[{p.low:+.3f}, {p.high:+.3f}], review rate {self.canary.review_rate:.2%} "
                f"(limit {self.review_limit:.2%})")  # fmt: skip


# ---- pure decisions ----


def offline_step(version: str, evaluation: Evaluation, gate: OfflineGate) -> Step:
    """Shadow for a new candidate, or retired when its evaluation shows it clearly worse."""
    d = evaluation.recall_difference
    if d is None:
        return Step(version, Stage.SHADOW, "no champion to compare with offline; shadow")
    summary = f"offline recall difference {d['estimate']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
    if evaluation.champion_in_sample:
        return Step(version, Stage.SHADOW, f"{summary}, on data the champion trained on "
                    "(it flatters the champion): shadow, traffic decides")  # fmt: skip
    if float(d["high"]) < -gate.max_recall_loss:
        return Step(version, Stage.RETIRED, f"{summary}: below -{gate.max_recall_loss}")
    return Step(version, Stage.SHADOW, f"{summary}; shadow")


def shadow_step(version: str, scored: int, hours: float, stage: ShadowStage,
                canary_share: float) -> Step | None:  # fmt: skip
    """Canary once it has scored enough decisions; retired when it takes too long."""
    if scored >= stage.events:
        return Step(version, Stage.CANARY, f"scored {scored:,} decisions in shadow; canary "
                    f"for {canary_share:.0%} of cards", canary_share=canary_share)  # fmt: skip
    if hours >= stage.max_hours:
        return Step(version, Stage.RETIRED, f"shadow scored {scored:,} of {stage.events:,} "
                    f"decisions in {hours:.0f} h")  # fmt: skip
    return None


def canary_test(canary: Arm, champion: Arm, review_budget: float, stage: CanaryStage) -> CanaryTest:
    """The test of the module docstring on two arms' counts."""
    recall = difference(champion.caught_cards, champion.fraud_cards, canary.caught_cards,
                        canary.fraud_cards, stage.confidence)  # fmt: skip
    precision = difference(champion.caught_cards, champion.declined_cards, canary.caught_cards,
                           canary.declined_cards, stage.confidence)  # fmt: skip
    limit = review_budget * (1 + stage.review_tolerance)
    passed = (recall.low >= stage.recall_margin and precision.low >= -stage.precision_tolerance
              and canary.review_rate <= limit)  # fmt: skip
    return CanaryTest(canary, champion, recall, precision, limit, passed)


def canary_step(version: str, canary: Arm, champion: Arm, review_budget: float, *, hours: float,
                stage: CanaryStage) -> Step | None:  # fmt: skip
    """Champion or retired once both arms hold the planned sample; retired on timeout."""
    if (
        min(canary.fraud_cards, champion.fraud_cards) >= stage.min_frauds
        and min(canary.declined_cards, champion.declined_cards) >= stage.min_declines
    ):
        test = canary_test(canary, champion, review_budget, stage)
        verdict = "passed" if test.passed else "failed"
        return Step(version, Stage.CHAMPION if test.passed else Stage.RETIRED,
                    f"{test.describe()}: {verdict}")  # fmt: skip
    if hours >= stage.max_hours:
        return Step(version, Stage.RETIRED, f"canary untested after {hours:.0f} h: "
                    f"{canary.fraud_cards} and {champion.fraud_cards} fraud cards of "
                    f"{stage.min_frauds}, {canary.declined_cards} and {champion.declined_cards} "
                    f"declined cards of {stage.min_declines} per arm")  # fmt: skip
    return None


def probation_step(
    version: str, settled_frauds: list[bool], config: PrecisionConfig
) -> Step | None:
    """A rollback when the fraud share of the latest settled declines is below the floor."""
    latest = settled_frauds[-config.window :]
    if len(latest) < config.min_settled:
        return None
    precision = sum(latest) / len(latest)
    if precision >= config.floor:
        return None
    return Step(version, None, f"precision alert on probation: {precision:.3f} of its latest "
                f"{len(latest)} settled declines were fraud, floor {config.floor}")  # fmt: skip


# ---- evidence from the archive's served decisions (`Archive.served_since`) ----


def _column(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table[name].to_numpy(zero_copy_only=False))


def _is(table: pa.Table, name: str, value: object) -> np.ndarray:
    return np.asarray(pc.fill_null(pc.equal(table[name], value), False).to_numpy(), bool)


def _older_than(table: pa.Table, wait: timedelta) -> np.ndarray:
    times = table["event_time"]
    if len(times) == 0:
        return np.zeros(0, bool)
    cutoff = pc.subtract(pc.max(times), pa.scalar(wait))
    return np.asarray(pc.less_equal(times, cutoff).to_numpy(zero_copy_only=False), bool)


def shadow_scored(served: pa.Table, version: str) -> int:
    """Decisions the shadow `version` scored."""
    return int(_is(served, "shadow_model_version", version).sum())


def arm(served: pa.Table, version: str, label_wait: timedelta) -> Arm:
    """`version`'s decisions old enough to count (see the module docstring)."""
    rows = _is(served, "model_version", version) & _older_than(served, label_wait)
    fraud = _is(served, "is_fraud", True) & rows
    decline = _is(served, "action", Action.DECLINE.value) & rows
    cards = _column(served, "card_token")

    def count(mask: np.ndarray) -> int:
        return len(np.unique(cards[mask]))

    return Arm(decisions=int(rows.sum()),
               reviews=int((_is(served, "action", Action.REVIEW.value) & rows).sum()),
               fraud_cards=count(fraud), declined_cards=count(decline),
               caught_cards=count(fraud & decline))  # fmt: skip


def settled_declines(served: pa.Table, version: str, ttl: timedelta) -> list[bool]:
    """Whether each settled decline of `version` was fraud, in decision order."""
    settled = _column(served, "labelled").astype(bool) | _older_than(served, ttl)
    rows = _is(served, "model_version", version) & _is(served, "action", Action.DECLINE.value)
    return [bool(f) for f in _is(served, "is_fraud", True)[rows & settled]]


# ---- the policy the trainer applies ----


class PromotionPolicy:
    """Applies the steps to one model's registry; called by the trainer every
    `trainer_check_s` with the registry, the archive and the time."""

    def __init__(self, model_name: str, config: PromotionConfig, precision: PrecisionConfig,
                 join: JoinConfig) -> None:  # fmt: skip
        self.model_name = model_name
        self.config = config
        self.precision = precision
        self.ttl = timedelta(days=join.ttl_days)

    @classmethod
    def from_settings(cls, settings: TrainerSettings) -> PromotionPolicy:
        """The policy of `settings.promotion_config`, with the monitor's precision alert."""
        monitor = MonitorConfig.from_yaml(settings.drift_config)
        return cls(settings.model_name, PromotionConfig.from_yaml(settings.promotion_config),
                   monitor.precision, monitor.join)  # fmt: skip

    def __call__(self, registry: Registry, archive: Archive, now: datetime) -> list[ModelEvent]:
        """Every step due now, made; the registry events they wrote (to announce)."""
        name = self.model_name
        if name not in registry.model_names():
            return []
        before = len(registry.events(name))
        for step in self.steps(registry, archive, now):
            _log.info("%s %s -> %s: %s", name, step.version,
                      step.stage.value if step.stage else "rollback", step.note)  # fmt: skip
            if step.stage is None:
                registry.rollback(name, actor=ACTOR, note=step.note)
            else:
                registry.set_stage(name, step.version, step.stage, actor=ACTOR,
                                   canary_share=step.canary_share, note=step.note)  # fmt: skip
        return registry.events(name)[before:]

    def steps(self, registry: Registry, archive: Archive, now: datetime) -> list[Step]:
        """What is due, in an order where each step frees the next one's stage."""
        name, config = self.model_name, self.config
        versions = registry.list(name)
        evaluated = {v.version for v in versions if registry.evaluation(name, v.version)}
        holders = {v.stage: v.version for v in versions}
        events = registry.events(name)
        since = {(e.version, e.event): e.at for e in events}
        champion, canary, shadow = (holders.get(s) for s in (Stage.CHAMPION, Stage.CANARY,
                                                              Stage.SHADOW))  # fmt: skip
        latest = next((e for e in reversed(events) if e.version == champion), None)
        # A champion brought back by a rollback is not on probation again, nor is a first
        # model (there is nothing to roll back to).
        probation = latest if (
            latest is not None and latest.event is ModelEventType.PROMOTED
            and latest.actor == ACTOR and now - latest.at < timedelta(hours=config.probation.hours)
            and len(registry.champion_history(name)) >= 2
        ) else None  # fmt: skip
        # When each judged stage began; the decisions since the earliest are read once.
        starts = {
            "probation": probation.at if probation else None,
            "canary": since[(canary, ModelEventType.CANARY)]
            if canary in evaluated and champion else None,
            "shadow": since[(shadow, ModelEventType.SHADOW)] if shadow in evaluated else None,
        }  # fmt: skip
        earliest = min((t for t in starts.values() if t is not None), default=now)

        @functools.cache
        def served() -> pa.Table:
            return archive.served_since(earliest, now)

        def after(start: datetime) -> pa.Table:
            rows = served()
            return rows.filter(pc.greater_equal(rows["decided_at"], pa.scalar(start)))

        if probation is not None:
            settled = settled_declines(after(probation.at), probation.version, self.ttl)
            step = probation_step(probation.version, settled, self.precision)
            if step is not None:
                return [step]  # the champion changes: judge the rest on the next check
        steps: list[Step] = []
        if (entered := starts["canary"]) is not None and canary and champion:
            wait = timedelta(hours=config.canary.label_wait_hours)
            budget = registry.show(name, champion).ensemble.thresholds.review_budget
            rows = after(entered)
            step = canary_step(canary, arm(rows, canary, wait), arm(rows, champion, wait),
                               budget, hours=_hours(now - entered),
                               stage=config.canary)  # fmt: skip
            if step is not None:
                steps.append(step)
                canary = None
        if (entered := starts["shadow"]) is not None and shadow:
            step = shadow_step(shadow, shadow_scored(after(entered), shadow),
                               _hours(now - entered), config.shadow,
                               config.canary.share)  # fmt: skip
            if step is not None and (canary is None or step.stage is Stage.RETIRED):
                steps.append(step)
                shadow = None
        candidates = [v.version for v in versions
                      if v.stage is Stage.CANDIDATE and v.version in evaluated]  # fmt: skip
        if candidates and shadow is None:
            newest, older = candidates[-1], candidates[:-1]
            evaluation = Evaluation.model_validate_json(registry.evaluation(name, newest) or "")
            steps += [Step(v, Stage.RETIRED, f"superseded by {newest}") for v in older]
            steps.append(offline_step(newest, evaluation, config.offline))
        return steps


def _hours(delta: timedelta) -> float:
    return delta.total_seconds() / 3600
