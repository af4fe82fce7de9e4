"""The promotion policy: its pure steps, its evidence from served decisions, and its
walk of a real registry from candidate to champion and back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from fraudstream.contracts import Action, Decision, DecisionPath, Label, LabelSource, Verdict
from fraudstream.contracts.messages import ModelEventType
from fraudstream.drift.config import JoinConfig, MonitorConfig, PrecisionConfig
from fraudstream.history import layout
from fraudstream.history.query import Archive
from fraudstream.model.train_config import LightGBMParams, TrainConfig
from fraudstream.registry import Registry, Stage
from fraudstream.retrain.job import Evaluation, SideResult
from fraudstream.retrain.policy import (
    Arm,
    CanaryStage,
    OfflineGate,
    PromotionConfig,
    PromotionPolicy,
    ShadowStage,
    arm,
    canary_step,
    canary_test,
    offline_step,
    probation_step,
    settled_declines,
    shadow_scored,
    shadow_step,
)
from fraudstream.retrain.settings import TrainerSettings
from fraudstream.training.publish import register
from fraudstream.training.synthetic import synthetic_training_data
from fraudstream.training.train import TrainResult, train

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
STAGE = CanaryStage(min_frauds=50, min_declines=30, label_wait_hours=0)


def _arm(frauds: int, caught: int, declines: int, reviews: int = 0, n: int = 10_000) -> Arm:
    return Arm(decisions=n, reviews=reviews, fraud_cards=frauds, declined_cards=declines,
               caught_cards=caught)  # fmt: skip


def test_config_file_holds_the_defaults() -> None:
    assert PromotionConfig.from_yaml("config/promotion.yaml") == PromotionConfig()


def test_a_bad_config_names_the_file_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "promotion.yaml"
    path.write_text("canary:\n  share: 1.5\n")
    with pytest.raises(Exception, match=r"promotion\.yaml.*share"):
        PromotionConfig.from_yaml(path)


def test_a_clearly_better_canary_passes() -> None:
    test = canary_test(_arm(200, 150, 170), _arm(200, 100, 115), 0.02, STAGE)
    assert test.recall.estimate == pytest.approx(0.25)
    assert test.recall.low > 0
    assert test.passed
    assert "recall +0.250" in test.describe()


def test_an_equal_canary_fails_and_a_small_margin_needs_more_data() -> None:
    assert not canary_test(_arm(200, 100, 115), _arm(200, 100, 115), 0.02, STAGE).passed
    # +0.10 recall: not shown with 60 frauds per arm, shown with 2,000.
    assert not canary_test(_arm(60, 36, 40), _arm(60, 30, 34), 0.02, STAGE).passed
    assert canary_test(_arm(2000, 1200, 1300), _arm(2000, 1000, 1100), 0.02, STAGE).passed


def test_more_recall_bought_with_precision_or_reviews_fails() -> None:
    # Same recall gain, but it declines 3x as many payments: precision drops by ~0.57.
    assert not canary_test(_arm(200, 150, 500), _arm(200, 100, 115), 0.02, STAGE).passed
    over = canary_test(_arm(200, 150, 170, reviews=300), _arm(200, 100, 115), 0.02, STAGE)
    assert over.canary.review_rate == pytest.approx(0.03)
    assert over.review_limit == pytest.approx(0.024)
    assert not over.passed


def test_the_canary_is_judged_once_at_the_planned_sample_or_retired_on_timeout() -> None:
    better, champion = _arm(49, 40, 45), _arm(60, 30, 35)
    assert canary_step("v2", better, champion, 0.02, hours=1, stage=STAGE) is None
    timeout = canary_step("v2", better, champion, 0.02, hours=STAGE.max_hours, stage=STAGE)
    assert timeout is not None
    assert timeout.stage is Stage.RETIRED
    assert "49 and 60 fraud cards of 50, 45 and 35 declined cards of 30" in timeout.note
    step = canary_step("v2", _arm(50, 45, 48), champion, 0.02, hours=1, stage=STAGE)
    assert step is not None
    assert step.stage is Stage.CHAMPION
    assert step.note.endswith("passed")
    step = canary_step("v2", _arm(50, 25, 30), champion, 0.02, hours=1, stage=STAGE)
    assert step is not None
    assert step.stage is Stage.RETIRED
    assert step.note.endswith("failed")


def test_shadow_goes_to_canary_after_its_events_or_retires() -> None:
    stage = ShadowStage(events=100, max_hours=10)
    assert shadow_step("v2", 99, 1, stage, 0.1) is None
    step = shadow_step("v2", 100, 1, stage, 0.1)
    assert step is not None
    assert (step.stage, step.canary_share) == (Stage.CANARY, 0.1)
    retired = shadow_step("v2", 99, 10, stage, 0.1)
    assert retired is not None
    assert retired.stage is Stage.RETIRED


def _evaluation(
    low: float | None, high: float | None, champion_trained_until: datetime | None = None
) -> Evaluation:
    side = SideResult(version="v", decisions=1000, frauds=100, declines=60, fraud_declined=50,
                      reviews=10, recall=0.5, decline_precision=0.8, review_rate=0.01,
                      decline_rate=0.06, average_precision=0.6, prevented_amount=100.0)  # fmt: skip
    diff = None if low is None or high is None else {
        "estimate": (low + high) / 2, "low": low, "high": high, "confidence": 0.95}  # fmt: skip
    return Evaluation(
        model_name="fraud", challenger=side, champion=side if diff else None,
        recall_difference=diff, precision_difference=diff, window_start=T0, window_end=T0,
        as_of=T0, warmup_transactions=0, rules_version="r", review_budget=0.02, triggers=[],
        evaluated_at=T0, champion_trained_until=champion_trained_until,
    )  # fmt: skip


def test_offline_gate_retires_only_a_clearly_worse_candidate() -> None:
    gate = OfflineGate(max_recall_loss=0.02)
    assert offline_step("v", _evaluation(-0.2, -0.05), gate).stage is Stage.RETIRED
    assert offline_step("v", _evaluation(-0.2, 0.01), gate).stage is Stage.SHADOW
    assert offline_step("v", _evaluation(None, None), gate).stage is Stage.SHADOW
    # A window the champion trained on flatters it: traffic decides instead.
    assert offline_step("v", _evaluation(-0.2, -0.05, T0 - HOUR), gate).stage is Stage.RETIRED
    in_sample = offline_step("v", _evaluation(-0.2, -0.05, T0 + HOUR), gate)
    assert in_sample.stage is Stage.SHADOW
    assert "on data the champion trained on" in in_sample.note


def test_probation_rolls_back_on_the_precision_alerts_condition() -> None:
    config = PrecisionConfig(window=100, min_settled=50, floor=0.5)
    assert probation_step("v", [False] * 49, config) is None
    step = probation_step("v", [True] * 100 + [False] * 60 + [True] * 40, config)
    assert step is not None  # the latest 100: 40 % fraud
    assert step.stage is None
    assert "0.400 of its latest 100 settled declines" in step.note
    assert probation_step("v", [False] * 60 + [True] * 100, config) is None


# ---- evidence: served decisions through the archive's query ----


@dataclass
class Served:
    """Decisions and labels as the archive holds them."""

    decisions: list[Decision]
    labels: list[Label]

    def add(self, tid: str, *, at: datetime, version: str, action: Action = Action.APPROVE,
            shadow: str | None = None, verdict: Verdict | None = None,
            labelled_at: datetime | None = None, card: str | None = None) -> None:  # fmt: skip
        self.decisions.append(Decision(
            transaction_id=tid, card_token=card or f"card-{tid}", action=action, score=0.5,
            model_version=version, shadow_model_version=shadow,
            shadow_score=0.5 if shadow else None, path=DecisionPath.ML, event_time=at,
            decided_at=at, latency_ms=5.0,
        ))  # fmt: skip
        if verdict is not None:
            self.labels.append(Label(
                transaction_id=tid, verdict=verdict, source=LabelSource.REVIEWER,
                actor="analyst-1", labelled_at=labelled_at or at + HOUR, event_time=at,
            ))  # fmt: skip

    def archive(self) -> Archive:
        return Archive.from_tables(
            decisions=_table(Decision, self.decisions), labels=_table(Label, self.labels)
        )


def _table(contract: type[Decision] | type[Label], rows: list[Decision] | list[Label]) -> pa.Table:
    n = len(rows)
    return layout.table(contract, rows, [0] * n, list(range(n)), [None] * n)


def test_arms_count_old_enough_decisions_with_the_labels_known_now() -> None:
    served = Served([], [])
    for i in range(10):  # v1: 4 frauds on 2 cards, one's 2 declined; 1 legit decline; 1 review
        action = Action.DECLINE if i in (0, 1, 9) else Action.REVIEW if i == 8 else Action.APPROVE
        verdict = Verdict.FRAUD if i < 4 else Verdict.LEGIT if i == 9 else None
        card = "card-x" if i < 2 else "card-y" if i < 4 else None
        served.add(f"a{i}", at=T0 + i * HOUR, version="v1", action=action, verdict=verdict,
                   card=card)  # fmt: skip
    served.add("late", at=T0, version="v1", verdict=Verdict.FRAUD, labelled_at=T0 + 99 * HOUR)
    served.add("young", at=T0 + 30 * HOUR, version="v1", action=Action.DECLINE,
               verdict=Verdict.FRAUD)  # fmt: skip
    served.add("b0", at=T0, version="v2", shadow="v3", action=Action.DECLINE)
    with served.archive() as archive:
        rows = archive.served_since(T0, as_of=T0 + 40 * HOUR)
        assert rows.num_rows == 13
        assert rows["decided_at"].to_pylist() == sorted(rows["decided_at"].to_pylist())
        # `young` is within 20 h of the newest event: it waits for its label. Cards count:
        # card-x (two frauds, both declined) is one fraud card, declined and caught.
        assert arm(rows, "v1", timedelta(hours=20)) == Arm(
            decisions=11, reviews=1, fraud_cards=2, declined_cards=2, caught_cards=1
        )
        assert arm(rows, "v2", timedelta(hours=20)) == Arm(1, 0, 0, 1, 0)
        assert shadow_scored(rows, "v3") == 1
        assert archive.served_since(T0 + 9 * HOUR, as_of=T0).num_rows == 2
        # Settled declines: labelled ones, and unlabelled ones past the label TTL.
        assert settled_declines(rows, "v1", timedelta(days=30)) == [True, True, False, True]
        assert settled_declines(rows, "v2", timedelta(hours=30)) == [False]


# ---- the policy on a real registry ----


@pytest.fixture(scope="module")
def trained() -> TrainResult:
    small = LightGBMParams(num_leaves=7, num_boost_round=30, early_stopping_rounds=10,
                           min_child_samples=20)  # fmt: skip
    config = TrainConfig(seed=1, parity_rows=200, lightgbm=small)
    return train(synthetic_training_data(15_000, n_features=8, seed=3), config)


class _Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


@pytest.fixture
def registry(tmp_path: Path, trained: TrainResult, clock: _Clock) -> Registry:
    registry = Registry(tmp_path / "models", clock=clock)
    v1 = register(registry, "fraud", trained).version
    registry.set_stage("fraud", v1, Stage.CHAMPION, actor="alice")
    return registry


def _challenger(registry: Registry, trained: TrainResult, low: float, high: float) -> str:
    version = register(registry, "fraud", trained).version
    registry.record_evaluation("fraud", version, _evaluation(low, high).model_dump_json())
    return version


POLICY_CONFIG = PromotionConfig.model_validate({
    "shadow": {"events": 20, "max_hours": 10},
    "canary": {"share": 0.5, "label_wait_hours": 0, "min_frauds": 100,
               "min_declines": 50, "max_hours": 10},
    "probation": {"hours": 24},
})  # fmt: skip


def _policy() -> PromotionPolicy:
    return PromotionPolicy("fraud", POLICY_CONFIG, PrecisionConfig(window=100, min_settled=50,
                           floor=0.5), JoinConfig())  # fmt: skip


def _canary_traffic(served: Served, start: datetime, version: str, champion: str, *,
                    canary_caught: int) -> None:  # fmt: skip
    """150 labelled frauds per arm over an hour; the champion declines 60 of its own."""
    for i in range(300):
        at = start + i * timedelta(seconds=10)
        model, caught = (version, canary_caught) if i % 2 else (champion, 60)
        action = Action.DECLINE if i // 2 < caught else Action.APPROVE
        served.add(f"c{i}", at=at, version=model, action=action, verdict=Verdict.FRAUD)


def test_policy_walks_a_better_challenger_to_champion_and_rolls_it_back(
    registry: Registry, trained: TrainResult, clock: _Clock
) -> None:
    policy, served = _policy(), Served([], [])
    v1 = registry.champion("fraud")
    assert v1 is not None
    stale = _challenger(registry, trained, -0.1, 0.1)
    v2 = _challenger(registry, trained, -0.05, 0.1)
    hand = register(registry, "fraud", trained).version  # no evaluation: left to people
    events = policy(registry, served.archive(), clock.now)
    assert [(e.version, e.event) for e in events] == [
        (stale, ModelEventType.RETIRED),
        (v2, ModelEventType.SHADOW),
    ]
    assert events[0].note == f"superseded by {v2}"
    assert registry.get("fraud", hand).stage is Stage.CANDIDATE
    # Shadow: 19 decisions it scored are not enough, 20 are.
    for i in range(19):
        served.add(f"s{i}", at=clock.now + i * HOUR / 60, version=v1.version, shadow=v2)
    assert policy(registry, served.archive(), clock.now + HOUR) == []
    served.add("s19", at=clock.now + HOUR / 2, version=v1.version, shadow=v2)
    events = policy(registry, served.archive(), clock.now + HOUR)
    assert [(e.version, e.event, e.canary_share) for e in events] == [
        (v2, ModelEventType.CANARY, 0.5)
    ]
    # Canary: both arms reach 100 labelled frauds; the canary declines 120 of 150.
    _canary_traffic(served, clock.now + timedelta(minutes=1), v2, v1.version, canary_caught=120)
    events = policy(registry, served.archive(), clock.now + 2 * HOUR)
    assert [(e.version, e.event) for e in events] == [
        (v1.version, ModelEventType.RETIRED),
        (v2, ModelEventType.PROMOTED),
    ]
    assert "recall +0.400" in events[1].note
    assert events[1].note.endswith("passed")
    assert registry.champion("fraud") == registry.get("fraud", v2)
    # Probation: its next 60 declines are labelled legitimate. With the canary's 120
    # fraud declines (after the promotion too) the latest 100 settled are 40 % fraud.
    start = clock.now + 2 * HOUR
    for i in range(60):
        served.add(f"p{i}", at=start + i * timedelta(seconds=1), version=v2,
                   action=Action.DECLINE, verdict=Verdict.LEGIT)  # fmt: skip
    events = policy(registry, served.archive(), clock.now + 4 * HOUR)
    assert [(e.version, e.event) for e in events] == [
        (v2, ModelEventType.RETIRED),
        (v1.version, ModelEventType.ROLLED_BACK),
    ]
    assert "precision alert on probation: 0.400 of its latest 100" in events[1].note
    champion = registry.champion("fraud")
    assert champion is not None
    assert champion.version == v1.version
    # The restored champion is not on probation: nothing more happens.
    assert policy(registry, served.archive(), clock.now + 4 * HOUR) == []


def test_a_first_model_the_trainer_promoted_is_not_on_probation(
    tmp_path: Path, trained: TrainResult, clock: _Clock
) -> None:
    registry = Registry(tmp_path / "models", clock=clock)
    v1 = register(registry, "fraud", trained).version
    registry.set_stage("fraud", v1, Stage.CHAMPION, actor="trainer", note="first model")
    served = Served([], [])
    for i in range(60):  # its declines all legitimate: the alert's condition holds
        served.add(f"p{i}", at=clock.now + timedelta(seconds=i + 1), version=v1,
                   action=Action.DECLINE, verdict=Verdict.LEGIT)  # fmt: skip
    assert registry.champion_history("fraud") == [v1]
    assert _policy()(registry, served.archive(), clock.now + 2 * HOUR) == []


def test_policy_retires_a_canary_that_does_not_beat_the_champion(
    registry: Registry, trained: TrainResult, clock: _Clock
) -> None:
    policy, served = _policy(), Served([], [])
    v1 = registry.champion("fraud")
    assert v1 is not None
    v2 = _challenger(registry, trained, -0.05, 0.1)
    registry.set_stage("fraud", v2, Stage.CANARY, canary_share=0.5, actor="trainer")
    _canary_traffic(served, clock.now + timedelta(minutes=1), v2, v1.version, canary_caught=66)
    events = policy(registry, served.archive(), clock.now + 2 * HOUR)
    assert [(e.version, e.event) for e in events] == [(v2, ModelEventType.RETIRED)]
    assert events[0].note.endswith("failed")
    assert registry.champion("fraud") == v1


def test_policy_from_the_repository_settings_files() -> None:
    policy = PromotionPolicy.from_settings(TrainerSettings())
    monitor = MonitorConfig.from_yaml("config/drift.yaml")
    assert policy.ttl == timedelta(days=monitor.join.ttl_days)
    assert policy.precision == monitor.precision
    assert policy.config == PromotionConfig()
