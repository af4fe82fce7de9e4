"""From rule outcomes and ensemble scores to approve / review / decline, for a batch.

Precedence: a decisive rule (decline, approve, review) decides alone, on the rules path.
Otherwise the calibrated score decides with the model's thresholds: decline at or above
the decline threshold, review inside the band or when members disagree, else approve.
Degraded mode (entity state unavailable, features from the event only) widens the review
band downwards. Without a model the rules path falls back to a conservative default:
review above a configured amount, approve below it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import numpy as np

from fraudstream.contracts import Action, DecisionPath, Reason, ReasonSource
from fraudstream.model.ensemble import Thresholds, decline_mask, review_mask
from fraudstream.rules.engine import RuleHit, RuleOutcome
from fraudstream.rules.model import RuleAction

if TYPE_CHECKING:
    from fraudstream.scoring.settings import ScorerSettings

_RULE_TO_ACTION = {
    RuleAction.DECLINE: Action.DECLINE,
    RuleAction.APPROVE: Action.APPROVE,
    RuleAction.REVIEW: Action.REVIEW,
}


@dataclass(frozen=True)
class DecisionPolicy:
    """Knobs of the decision stage that are not part of a model version."""

    degraded_review_factor: float = 0.5  # review threshold multiplier when degraded
    rules_only_review_amount: float = 1000.0  # no model: review above this amount

    @classmethod
    def from_settings(cls, settings: ScorerSettings) -> DecisionPolicy:
        """The policy a scorer with `settings` decides with (the backtest uses it too)."""
        return cls(degraded_review_factor=settings.degraded_review_factor,
                   rules_only_review_amount=settings.rules_only_review_amount)  # fmt: skip


@dataclass(frozen=True)
class ModelScores:
    """The ensemble's output for a batch (rows aligned with the batch)."""

    scores: np.ndarray
    members: dict[str, np.ndarray]
    disagree: np.ndarray
    thresholds: Thresholds


@dataclass(frozen=True, slots=True)
class Verdict:
    """One row's decision before it becomes a `Decision` message."""

    action: Action
    path: DecisionPath
    reasons: tuple[Reason, ...]


def decide_batch(
    rules: Sequence[RuleOutcome],
    amounts: np.ndarray,
    model: ModelScores | None,
    *,
    degraded: bool,
    policy: DecisionPolicy,
) -> list[Verdict]:
    """One verdict per row; `degraded` means features came from the event alone."""
    if model is None:
        return [
            _rules_only(rule, float(amount), policy)
            for rule, amount in zip(rules, amounts, strict=True)
        ]
    thresholds = model.thresholds
    if degraded:
        widened = thresholds.review * policy.degraded_review_factor
        thresholds = thresholds.model_copy(update={"review": widened})
    declines = decline_mask(model.scores, thresholds).tolist()
    reviews = review_mask(model.scores, model.disagree, thresholds).tolist()
    scores = model.scores.tolist()
    ml_path = DecisionPath.DEGRADED if degraded else DecisionPath.ML
    verdicts = []
    for row, rule in enumerate(rules):
        rule_reasons = _rule_reasons(rule)
        if rule.action is not None:
            verdicts.append(Verdict(_RULE_TO_ACTION[rule.action], DecisionPath.RULES, rule_reasons))
            continue
        score = scores[row]
        reason: Reason | None
        if declines[row]:
            action, reason = Action.DECLINE, _score_reason("ML_DECLINE", score, thresholds.decline)
        elif reviews[row]:
            action = Action.REVIEW
            reason = (
                _score_reason("ML_REVIEW_BAND", score, thresholds.review)
                if score >= thresholds.review
                else _DISAGREEMENT
            )
        else:
            action, reason = Action.APPROVE, None
        extra = (reason,) if reason else ()
        verdicts.append(Verdict(action, ml_path, (*rule_reasons, *extra)))
    return verdicts


_DISAGREEMENT = Reason(
    code="ML_DISAGREEMENT", source=ReasonSource.MODEL,
    detail="ensemble members disagree beyond the margin",
)  # fmt: skip
_NO_MODEL = Reason(
    code="MODEL_UNAVAILABLE", source=ReasonSource.SYSTEM,
    detail="no model loaded: rules and conservative defaults only",
)  # fmt: skip


def _rules_only(rule: RuleOutcome, amount: float, policy: DecisionPolicy) -> Verdict:
    reasons = (*_rule_reasons(rule), _NO_MODEL)
    if rule.action is not None:
        return Verdict(_RULE_TO_ACTION[rule.action], DecisionPath.RULES, reasons)
    if amount > policy.rules_only_review_amount:
        return Verdict(Action.REVIEW, DecisionPath.RULES, reasons)
    return Verdict(Action.APPROVE, DecisionPath.RULES, reasons)


def _rule_reasons(rule: RuleOutcome) -> tuple[Reason, ...]:
    return tuple(_rule_reason(hit) for hit in rule.hits) if rule.hits else ()


@cache  # a rule's reason never changes; packs are few and small
def _rule_reason(hit: RuleHit) -> Reason:
    return Reason(code=hit.reason, source=ReasonSource.RULE, detail=hit.description[:256])


def _score_reason(code: str, score: float, threshold: float) -> Reason:
    # Built from our own constants and numbers: validation would only cost time.
    return Reason.model_construct(
        code=code, source=ReasonSource.MODEL, detail=f"score {score:.4f} >= {threshold:.4f}"
    )
