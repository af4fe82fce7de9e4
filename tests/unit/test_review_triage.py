"""Review logic without a database: queues, expected loss, SLA due times, what overturns
the model, four eyes, and feature names in an analyst's words."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fraudstream.contracts import Action, DecisionPath, Reason, ReasonSource, ReviewCase
from fraudstream.review.triage import (
    Queue,
    ReviewVerdict,
    describe_feature,
    explain_contribution,
    is_override,
    needs_second_approval,
    sla_left_s,
    triage,
)
from tests.factories import NOW, transaction

SLA = {"high_value": 3600.0, "rules": 7200.0, "standard": 14400.0, "escalation": 3600.0}


def case(amount: float, score: float | None = 0.5, rule: bool = False) -> ReviewCase:
    reasons = [Reason(code="VELOCITY", source=ReasonSource.RULE)] if rule else []
    return ReviewCase(
        transaction=transaction(amount=amount),
        action_suggested=Action.REVIEW,
        score=score,
        path=DecisionPath.ML,
        reasons=reasons,
        created_at=NOW,
    )


@pytest.mark.parametrize(
    ("amount", "rule", "queue"),
    [
        (1000.0, False, Queue.HIGH_VALUE),
        (2500.0, True, Queue.HIGH_VALUE),
        (999.99, True, Queue.RULES),
        (20.0, False, Queue.STANDARD),
    ],
)
def test_queue_by_amount_band_then_reason(amount: float, rule: bool, queue: Queue) -> None:
    assert triage(case(amount, rule=rule), 1000.0, SLA).queue is queue


def test_expected_loss_and_due_time() -> None:
    scored = triage(case(200.0, score=0.25), 1000.0, SLA)
    assert scored.expected_loss == pytest.approx(50.0)
    assert scored.due_at == NOW + timedelta(hours=4)
    unscored = triage(case(200.0, score=None), 1000.0, SLA)  # rules only: the whole amount
    assert unscored.expected_loss == pytest.approx(200.0)
    assert sla_left_s(scored.due_at, NOW + timedelta(hours=5)) == -3600


@pytest.mark.parametrize(
    ("verdict", "action", "score", "override"),
    [
        (ReviewVerdict.LEGIT, Action.DECLINE, 0.9, True),
        (ReviewVerdict.FRAUD, Action.DECLINE, 0.9, False),
        (ReviewVerdict.FRAUD, Action.REVIEW, 0.7, False),
        (ReviewVerdict.LEGIT, Action.REVIEW, 0.7, True),
        (ReviewVerdict.FRAUD, Action.REVIEW, 0.3, True),
        (ReviewVerdict.LEGIT, Action.REVIEW, None, False),
        (ReviewVerdict.FRAUD, Action.REVIEW, None, False),
        (ReviewVerdict.FRAUD, Action.APPROVE, 0.1, True),
        (ReviewVerdict.UNSURE, Action.DECLINE, 0.9, False),
    ],
)
def test_overrides_go_against_the_models_side(
    verdict: ReviewVerdict, action: Action, score: float | None, override: bool
) -> None:
    assert is_override(verdict, action, score) is override


def test_only_approving_a_decline_needs_a_second_person() -> None:
    assert needs_second_approval(ReviewVerdict.LEGIT, Action.DECLINE)
    assert not needs_second_approval(ReviewVerdict.FRAUD, Action.DECLINE)
    assert not needs_second_approval(ReviewVerdict.LEGIT, Action.REVIEW)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("card_count_1h", "number of payments on this card in the last 1 hour"),
        ("card_sum_30d", "amount spent on this card in the last 30 days"),
        ("merchant_label_risk_7d", "share of confirmed fraud on this merchant in the last 7 days"),
        ("device_distinct_cards_1d", "number of different cards on this device in the last 1 day"),
        ("amount_log", "the amount"),
        ("producer_risk", "the platform's risk"),
        ("card_mystery_thing", "card_mystery_thing"),
        ("weird", "weird"),
    ],
)
def test_features_in_words(name: str, words: str) -> None:
    assert describe_feature(name) == words


def test_contributions_say_which_way_and_how_hard() -> None:
    assert explain_contribution("card_count_1h", 1.4) == (
        "number of payments on this card in the last 1 hour pushed the score strongly "
        "towards fraud (+1.40)"
    )
    assert explain_contribution("amount_log", -0.1).endswith("slightly towards legitimate (-0.10)")
