"""Property-based tests of validation on hostile input."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudstream.contracts import (
    Action,
    DeadLetterReason,
    Decision,
    DecisionPath,
    Reason,
    ReasonSource,
    Rejection,
    Transaction,
    decode,
    encode,
    encode_decision,
    reason_fields,
)
from fraudstream.contracts.fields import ISO_4217, mask_pans
from tests.factories import transaction_json

LIMIT = 64 * 1024
FIELDS = list(transaction_json())
ID_FIELDS = ["transaction_id", "card_token", "customer_id", "merchant_id", "device_id"]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    result = decode(Transaction, raw, LIMIT)
    assert isinstance(result, Transaction | Rejection)


@given(st.dictionaries(st.sampled_from([*FIELDS, "extra"]), json_values, max_size=12))
def test_arbitrary_objects_are_rejected_with_field_errors(data: dict[str, object]) -> None:
    result = decode(Transaction, orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS), LIMIT)
    assert isinstance(result, Rejection)  # random values never make a full valid payment
    assert result.reason in {
        DeadLetterReason.SCHEMA_VIOLATION,
        DeadLetterReason.PAN_DETECTED,
        DeadLetterReason.UNSUPPORTED_SCHEMA_VERSION,
    }
    assert result.errors
    assert len(result.detail) <= 2048


@given(st.sampled_from(FIELDS), json_values)
def test_one_corrupted_field_is_accepted_only_if_valid(field: str, value: object) -> None:
    data = transaction_json(**{field: value})
    result = decode(Transaction, orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS), LIMIT)
    if isinstance(result, Transaction):
        # Whatever got through satisfies the invariants we sell.
        assert math.isfinite(result.amount)
        assert result.amount > 0
        assert result.currency in ISO_4217
        assert result.event_time.tzinfo is not None
        for name in ID_FIELDS:
            assert not re.fullmatch(r"\d{13,19}", getattr(result, name) or "")
    else:
        assert {e.loc.split(".")[0] for e in result.errors} <= {field, "$"}


@given(
    st.text(alphabet="0123456789", min_size=13, max_size=19),
    st.sampled_from(["", " ", "-"]),
    st.sampled_from(ID_FIELDS),
)
def test_any_pan_like_identifier_is_refused(digits: str, sep: str, field: str) -> None:
    card = sep.join(digits[i : i + 4] for i in range(0, len(digits), 4))
    result = decode(Transaction, orjson.dumps(transaction_json(**{field: card})), LIMIT)
    assert isinstance(result, Rejection)
    assert result.reason is DeadLetterReason.PAN_DETECTED
    assert digits not in result.detail


@given(st.floats(min_value=0.01, max_value=1e9, allow_nan=False), st.sampled_from(sorted(ISO_4217)))
def test_valid_amounts_and_currencies_round_trip(amount: float, currency: str) -> None:
    tx = decode(
        Transaction, orjson.dumps(transaction_json(amount=amount, currency=currency)), LIMIT
    )
    assert isinstance(tx, Transaction)
    assert decode(Transaction, encode(tx), LIMIT) == tx


@settings(max_examples=300)
@given(st.binary(max_size=200), st.text(alphabet="0123456789", min_size=13, max_size=19))
def test_mask_pans_leaves_no_pan_behind(noise: bytes, digits: str) -> None:
    masked, found = mask_pans(noise + b" " + digits.encode() + b" " + noise)
    assert found
    assert not re.search(rb"(?<![0-9])[0-9]{13,19}(?![0-9])", masked)


ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.:@-]{0,20}\Z")
card_tokens = st.from_regex(r"\A[a-z][A-Za-z0-9_.:@-]{0,20}\Z")  # never PAN-like
probabilities = st.floats(min_value=0.0, max_value=1.0)
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(-timedelta(hours=5))]),
)  # fmt: skip
reasons = st.builds(
    Reason,
    code=st.from_regex(r"\A[A-Z][A-Z0-9_]{0,10}\Z"),
    source=st.sampled_from(ReasonSource),
    detail=st.text(max_size=40),
    feature=st.none() | st.from_regex(r"\A[a-z][a-z0-9_]{0,10}\Z"),
    contribution=st.none() | st.floats(allow_nan=False, allow_infinity=False),
)


@settings(max_examples=300)
@given(
    transaction_id=ids, card_token=card_tokens, action=st.sampled_from(Action),
    score=st.none() | probabilities, member_scores=st.dictionaries(ids, probabilities, max_size=3),
    reasons=st.lists(reasons, max_size=4), model_version=st.none() | ids,
    shadow=st.none() | st.tuples(ids, probabilities), path=st.sampled_from(DecisionPath),
    event_time=times, decided_at=times,
    latency_ms=st.floats(min_value=0, max_value=1e7, allow_nan=False, allow_infinity=False),
)  # fmt: skip
def test_the_scorers_decision_encoder_writes_what_pydantic_writes(  # noqa: PLR0917
    transaction_id: str, card_token: str, action: Action, score: float | None,
    member_scores: dict[str, float], reasons: list[Reason], model_version: str | None,
    shadow: tuple[str, float] | None, path: DecisionPath, event_time: datetime,
    decided_at: datetime, latency_ms: float,
) -> None:  # fmt: skip
    fields: dict[str, Any] = {
        "transaction_id": transaction_id, "card_token": card_token, "action": action,
        "score": score, "member_scores": member_scores, "model_version": model_version,
        "shadow_model_version": shadow[0] if shadow else None,
        "shadow_score": shadow[1] if shadow else None, "path": path, "event_time": event_time,
        "decided_at": decided_at, "latency_ms": latency_ms,
    }  # fmt: skip
    fast = encode_decision(reasons=[reason_fields(r) for r in reasons], **fields)
    assert fast == encode(Decision(reasons=reasons, **fields))
