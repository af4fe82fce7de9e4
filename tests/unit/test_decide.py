"""The decision stage: rule precedence, thresholds, disagreement, degraded and rules-only."""

from __future__ import annotations

import numpy as np

from fraudstream.contracts import Action, DecisionPath
from fraudstream.model.ensemble import Thresholds
from fraudstream.rules.engine import RuleHit, RuleOutcome
from fraudstream.rules.model import RuleAction
from fraudstream.scoring.decide import DecisionPolicy, ModelScores, decide_batch

THRESHOLDS = Thresholds(
    review=0.2, decline=0.8, decline_target_met=True, review_budget=0.005,
    target_decline_precision=0.9, validation_review_rate=0.005,
    validation_decline_rate=0.002, validation_decline_precision=0.92,
)  # fmt: skip
NONE = RuleOutcome(None, ())
TAG = RuleOutcome(None, (RuleHit("NEW_DEV", RuleAction.TAG, "NEW_DEVICE", "new device"),))
BLOCK = RuleOutcome(RuleAction.DECLINE, (RuleHit("BL", RuleAction.DECLINE, "BLOCKED", "bl"),))
POLICY = DecisionPolicy()


def _model(scores: list[float], disagree: list[bool] | None = None) -> ModelScores:
    array = np.array(scores)
    flags = np.array(disagree if disagree is not None else [False] * len(scores))
    return ModelScores(array, {"lightgbm": array}, flags, THRESHOLDS)


def test_thresholds_and_disagreement() -> None:
    model = _model([0.05, 0.3, 0.85, 0.1, 0.8], [False, False, False, True, True])
    verdicts = decide_batch([NONE] * 5, np.full(5, 10.0), model, degraded=False, policy=POLICY)
    assert [v.action for v in verdicts] == [
        Action.APPROVE, Action.REVIEW, Action.DECLINE, Action.REVIEW, Action.DECLINE,
    ]  # fmt: skip
    assert {v.path for v in verdicts} == {DecisionPath.ML}
    assert [r.code for r in verdicts[1].reasons] == ["ML_REVIEW_BAND"]
    assert [r.code for r in verdicts[3].reasons] == ["ML_DISAGREEMENT"]
    assert verdicts[0].reasons == ()


def test_decisive_rules_win_and_tags_travel_with_ml_decisions() -> None:
    verdicts = decide_batch(
        [BLOCK, TAG], np.full(2, 10.0), _model([0.01, 0.9]), degraded=False, policy=POLICY
    )
    assert (verdicts[0].action, verdicts[0].path) == (Action.DECLINE, DecisionPath.RULES)
    assert [r.code for r in verdicts[0].reasons] == ["BLOCKED"]
    assert (verdicts[1].action, verdicts[1].path) == (Action.DECLINE, DecisionPath.ML)
    assert [r.code for r in verdicts[1].reasons] == ["NEW_DEVICE", "ML_DECLINE"]


def test_degraded_mode_widens_the_review_band() -> None:
    model = _model([0.15, 0.05])
    normal = decide_batch([NONE] * 2, np.full(2, 10.0), model, degraded=False, policy=POLICY)
    degraded = decide_batch([NONE] * 2, np.full(2, 10.0), model, degraded=True, policy=POLICY)
    assert [v.action for v in normal] == [Action.APPROVE, Action.APPROVE]
    assert [v.action for v in degraded] == [Action.REVIEW, Action.APPROVE]
    assert {v.path for v in degraded} == {DecisionPath.DEGRADED}


def test_without_a_model_rules_decide_with_conservative_defaults() -> None:
    verdicts = decide_batch(
        [NONE, NONE, BLOCK], np.array([50.0, 5000.0, 1.0]), None, degraded=False, policy=POLICY
    )
    assert [v.action for v in verdicts] == [Action.APPROVE, Action.REVIEW, Action.DECLINE]
    assert {v.path for v in verdicts} == {DecisionPath.RULES}
    assert all(v.reasons[-1].code == "MODEL_UNAVAILABLE" for v in verdicts)
