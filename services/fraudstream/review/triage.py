"""Pure review logic: which queue a case joins, when it is due, how the queue sorts, and
what counts as overturning the model. No database, no clock: callers pass `now`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from fraudstream.contracts import Action, ReasonSource, ReviewCase


class Queue(StrEnum):
    HIGH_VALUE = "high_value"  # amount at or above the high-value setting
    RULES = "rules"  # a rule flagged it
    STANDARD = "standard"
    ESCALATION = "escalation"  # sent up by a reviewer ("unsure"); leads and admins work it


class Status(StrEnum):
    OPEN = "open"
    PENDING_APPROVAL = "pending_approval"  # a verdict that needs a second person
    DECIDED = "decided"


class ReviewVerdict(StrEnum):
    """What a reviewer decides. Fraud and legit each become one label; unsure sends the
    case to the escalation queue with the reviewer's note (no label until decided)."""

    FRAUD = "fraud"
    LEGIT = "legit"
    UNSURE = "unsure"


@dataclass(frozen=True)
class Triage:
    queue: Queue
    expected_loss: float
    due_at: datetime


def triage(case: ReviewCase, high_value_amount: float, sla_s: Mapping[str, float]) -> Triage:
    """Queue, expected loss (score x amount; the amount when unscored) and SLA due time."""
    tx = case.transaction
    if tx.amount >= high_value_amount:
        queue = Queue.HIGH_VALUE
    elif any(r.source is ReasonSource.RULE for r in case.reasons):
        queue = Queue.RULES
    else:
        queue = Queue.STANDARD
    score = case.score if case.score is not None else 1.0
    due = case.created_at + timedelta(seconds=sla_s[queue.value])
    return Triage(queue, round(score * float(tx.amount), 4), due)


def model_leans_fraud(action_suggested: str, score: float | None) -> bool | None:
    """The system's side on a case: a suggested decline leans fraud, an approve legit, a
    review scored at 0.5 or more fraud and below legit; an unscored (rules-only) review
    takes no side (None)."""
    if action_suggested == Action.DECLINE:
        return True
    if action_suggested == Action.APPROVE:
        return False
    return None if score is None else score >= 0.5


def is_override(verdict: ReviewVerdict, action_suggested: str, score: float | None) -> bool:
    """A verdict against the system's side (these need a note and count as overturns)."""
    side = model_leans_fraud(action_suggested, score)
    if verdict is ReviewVerdict.UNSURE or side is None:
        return False
    return (verdict is ReviewVerdict.FRAUD) != side


def needs_second_approval(verdict: ReviewVerdict, action_suggested: str) -> bool:
    """Approving (legit) a case the system declined takes a second person (four eyes)."""
    return verdict is ReviewVerdict.LEGIT and action_suggested == Action.DECLINE


def sla_left_s(due_at: datetime, now: datetime) -> float:
    """Seconds until the case misses its SLA (negative once it has)."""
    return (due_at - now).total_seconds()


_WINDOW = re.compile(r"_(\d+)(m|h|d)$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
_ENTITY = {
    "card": "this card",
    "merchant": "this merchant",
    "device": "this device",
    "ip": "this IP address",
}
_EVENT = {
    "amount_log": "the amount",
    "hour_sin": "the time of day",
    "hour_cos": "the time of day",
    "card_present": "whether the card was present",
    "channel_ecommerce": "an online payment",
    "channel_atm": "an ATM withdrawal",
    "channel_moto": "a mail or phone order",
    "channel_recurring": "a recurring payment",
    "high_risk_mcc": "a high-risk merchant category",
    "has_location": "whether a location was sent",
}
_MEASURE = {
    "count": "number of payments",
    "sum": "amount spent",
    "amount_ratio": "amount compared with its usual",
    "log_seconds_since_last": "time since its previous payment",
    "distance_km": "distance from its previous payment",
    "speed_kmh": "travel speed since its previous payment",
    "new_merchant": "first payment at this merchant",
    "new_country": "first payment in this country",
    "new_device": "first payment from this device",
    "distinct_merchants": "number of different merchants",
    "distinct_countries": "number of different countries",
    "distinct_devices": "number of different devices",
    "distinct_cards": "number of different cards",
    "delayed_count": "labelled payments",
    "label_risk": "share of confirmed fraud",
}


def describe_feature(name: str) -> str:
    """A feature name in an analyst's words, e.g. `card_count_1h` → "number of payments on
    this card in the last 1 hour"; unknown names come back as they are."""
    if name in _EVENT:
        return _EVENT[name]
    if name.startswith("producer_"):
        return f"the platform's {name.removeprefix('producer_').replace('_', ' ')}"
    entity, _, rest = name.partition("_")
    if entity not in _ENTITY:
        return name
    window = ""
    if match := _WINDOW.search(rest):
        rest = rest[: match.start()]
        count, unit = match.group(1), _UNITS[match.group(2)]
        window = f" in the last {count} {unit if count != '1' else unit[:-1]}"
    measure = _MEASURE.get(rest)
    if measure is None:
        return name
    return f"{measure} on {_ENTITY[entity]}{window}"


def explain_contribution(name: str, contribution: float) -> str:
    """One line for the case page: which way a feature pushed the score, and how hard."""
    strength = abs(contribution)
    how = "strongly " if strength >= 1.0 else "slightly " if strength < 0.2 else ""
    way = "towards fraud" if contribution > 0 else "towards legitimate"
    return f"{describe_feature(name)} pushed the score {how}{way} ({contribution:+.2f})"
