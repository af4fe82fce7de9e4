"""Contract validation and the batch codec, without any service."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from fraudstream.contracts import (
    CONTRACTS,
    Contract,
    DeadLetterReason,
    Rejection,
    Transaction,
    check_event_time,
    decode,
    decode_batch,
    decode_transactions,
    encode,
    encode_batch,
)
from fraudstream.contracts.fields import looks_like_pan, mask_pans
from tests.factories import NOW, samples, transaction_json

LIMIT = 64 * 1024


def _reject(data: object) -> Rejection:
    result = decode(Transaction, orjson.dumps(data), LIMIT)
    assert isinstance(result, Rejection), f"accepted: {result!r}"
    return result


@pytest.mark.parametrize("message", samples(), ids=lambda m: type(m).__name__)
def test_every_contract_round_trips_through_json(message: Contract) -> None:
    decoded = decode(type(message), encode(message), LIMIT)
    assert decoded == message


def test_samples_cover_every_contract_and_each_has_a_schema_version() -> None:
    assert {type(m) for m in samples()} == set(CONTRACTS)
    for model in CONTRACTS:
        assert model.model_fields["schema_version"].default == 1


def test_valid_transaction_is_accepted_with_types() -> None:
    tx = decode(Transaction, orjson.dumps(transaction_json()), LIMIT)
    assert isinstance(tx, Transaction)
    assert tx.amount == 42.5
    assert tx.event_time == NOW
    assert tx.features == {"producer_risk": 0.25}


@pytest.mark.parametrize(
    ("overrides", "loc", "error_type"),
    [
        ({"amount": 0}, "amount", "greater_than"),
        ({"amount": -5}, "amount", "greater_than"),
        ({"amount": 1e12}, "amount", "less_than_equal"),
        ({"amount": "12.50"}, "amount", "float_type"),
        ({"currency": "XYZ"}, "currency", "unknown_currency"),
        ({"currency": "eur"}, "currency", "string_pattern_mismatch"),
        ({"event_time": "2026-11-23T10:00:00"}, "event_time", "timezone_aware"),
        ({"transaction_id": "x" * 65}, "transaction_id", "string_too_long"),
        ({"transaction_id": ""}, "transaction_id", "string_too_short"),
        ({"mcc": "54111"}, "mcc", "string_pattern_mismatch"),
        ({"country": "Germany"}, "country", "string_pattern_mismatch"),
        ({"ip": "999.1.1.1"}, "ip", "string_pattern_mismatch"),
        ({"ip": "fe80::1::2"}, "ip", "ip_address"),
        ({"latitude": 91.0}, "latitude", "less_than_equal"),
        ({"channel": "carrier-pigeon"}, "channel", "enum"),
        ({"card_present": "yes"}, "card_present", "bool_type"),
        ({"unexpected": 1}, "unexpected", "extra_forbidden"),
        ({"features": {f"f{i}": 1.0 for i in range(65)}}, "features", "too_long"),
        ({"features": {"Bad Name": 1.0}}, "features.Bad Name.[key]", "string_pattern_mismatch"),
    ],
)
def test_schema_violations_name_the_field(
    overrides: dict[str, object], loc: str, error_type: str
) -> None:
    rejection = _reject(transaction_json(**overrides))
    assert rejection.reason is DeadLetterReason.SCHEMA_VIOLATION
    assert (loc, error_type) in {(e.loc, e.type) for e in rejection.errors}
    assert loc.split(".", maxsplit=1)[0] in rejection.detail


def test_missing_fields_are_all_listed() -> None:
    data = transaction_json()
    del data["amount"], data["currency"]
    rejection = _reject(data)
    assert {(e.loc, e.type) for e in rejection.errors} == {
        ("amount", "missing"),
        ("currency", "missing"),
    }


def test_location_needs_both_coordinates() -> None:
    rejection = _reject(transaction_json(longitude=None))
    assert "latitude and longitude" in rejection.detail


@pytest.mark.parametrize(
    "card", ["4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111", "5" * 13, "6" * 19]
)
def test_pan_like_card_token_is_refused_without_echoing_it(card: str) -> None:
    rejection = _reject(transaction_json(card_token=card))
    assert rejection.reason is DeadLetterReason.PAN_DETECTED
    digits = card.replace(" ", "").replace("-", "")
    assert digits not in rejection.detail
    assert all(digits not in e.msg for e in rejection.errors)


ID_FIELDS = ["transaction_id", "card_token", "customer_id", "merchant_id", "device_id"]


@pytest.mark.parametrize("field", ID_FIELDS)
@pytest.mark.parametrize("pan", ["5555555555554444", "5555-5555-5555-4444", "5555 5555 5555 4444"])
def test_pan_in_any_identifier_is_refused_naming_only_the_field(field: str, pan: str) -> None:
    rejection = _reject(transaction_json(**{field: pan}))
    assert rejection.reason is DeadLetterReason.PAN_DETECTED
    assert rejection.detail == (
        f"{field}: looks like a raw card number; send a token, never the PAN"
    )
    assert [(e.loc, e.type) for e in rejection.errors] == [(field, "pan_detected")]
    digits = pan.replace(" ", "").replace("-", "")
    assert all(digits[6:12] not in text for text in (rejection.detail, rejection.errors[0].msg))


def test_pans_in_several_identifiers_are_all_named() -> None:
    rejection = _reject(transaction_json(customer_id="4" * 16, device_id="5" * 13))
    assert rejection.reason is DeadLetterReason.PAN_DETECTED
    assert rejection.detail.startswith("customer_id, device_id: looks like a raw card number")


def test_pan_in_the_ip_field_fails_its_address_syntax() -> None:
    rejection = _reject(transaction_json(ip="5555555555554444"))
    assert rejection.reason is DeadLetterReason.SCHEMA_VIOLATION
    assert "5555555555554444" not in rejection.detail
    assert [(e.loc, e.type) for e in rejection.errors] == [("ip", "string_pattern_mismatch")]


@pytest.mark.parametrize("field", ID_FIELDS)
@pytest.mark.parametrize("value", ["tx-4111111111111111", "4" * 12, "4" * 20])
def test_identifiers_that_are_not_pan_like_pass(field: str, value: str) -> None:
    result = decode(Transaction, orjson.dumps(transaction_json(**{field: value})), LIMIT)
    assert isinstance(result, Transaction)


@pytest.mark.parametrize("card", ["card-4111111111111111x", "4" * 12, "4" * 20, "tok_abc"])
def test_tokens_that_are_not_pan_like_pass(card: str) -> None:
    assert not looks_like_pan(card) or card.isdigit()
    result = decode(Transaction, orjson.dumps(transaction_json(card_token=card)), LIMIT)
    assert isinstance(result, Transaction)


def test_unsupported_schema_version() -> None:
    rejection = _reject(transaction_json(schema_version=2))
    assert rejection.reason is DeadLetterReason.UNSUPPORTED_SCHEMA_VERSION


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", DeadLetterReason.EMPTY),
        (None, DeadLetterReason.EMPTY),
        (b"{not json", DeadLetterReason.INVALID_JSON),
        (b"\xff\xfe", DeadLetterReason.INVALID_JSON),
        (b'{"amount": NaN}', DeadLetterReason.SCHEMA_VIOLATION),
        (b"[1, 2]", DeadLetterReason.SCHEMA_VIOLATION),
        (b"x" * (LIMIT + 1), DeadLetterReason.OVERSIZE),
    ],
)
def test_unparseable_records_get_a_reason(raw: bytes | None, reason: DeadLetterReason) -> None:
    result = decode(Transaction, raw, LIMIT)
    assert isinstance(result, Rejection)
    assert result.reason is reason


def test_batch_splits_oks_and_errs_in_order() -> None:
    good = orjson.dumps(transaction_json())
    values = [good, b"{", good, orjson.dumps(transaction_json(amount=-1)), None]
    oks, errs = decode_transactions(values, LIMIT)
    assert [index for index, _ in oks] == [0, 2]
    assert [(index, r.reason) for index, r in errs] == [
        (1, DeadLetterReason.INVALID_JSON),
        (3, DeadLetterReason.SCHEMA_VIOLATION),
        (4, DeadLetterReason.EMPTY),
    ]


NOW_MS = int(NOW.timestamp() * 1000)


def _at(event_time: datetime) -> bytes:
    return orjson.dumps(transaction_json(event_time=event_time.isoformat()))


def test_event_time_more_than_a_day_ahead_of_the_broker_is_refused() -> None:
    values = [
        _at(NOW + timedelta(days=1)),  # exactly at the limit: accepted
        _at(NOW + timedelta(days=1, hours=1)),
        _at(NOW + timedelta(days=3)),  # no timestamp: not checked
        b"{",
        _at(NOW - timedelta(days=900)),  # the past is not bounded by default
    ]
    timestamps = [NOW_MS, NOW_MS, None, NOW_MS, NOW_MS]
    oks, errs = decode_transactions(values, LIMIT, timestamps_ms=timestamps)
    assert [index for index, _ in oks] == [0, 2, 4]
    assert [(index, r.reason) for index, r in errs] == [
        (1, DeadLetterReason.EVENT_TIME_OUT_OF_RANGE),
        (3, DeadLetterReason.INVALID_JSON),
    ]
    rejection = errs[0][1]
    assert rejection.detail == (
        "event_time 2026-11-24T13:00:00+00:00 is 25.0 h after the record's broker timestamp "
        "2026-11-23T12:00:00+00:00; the limit is 24 h (check the producer's clock and time zone)"
    )
    assert [(e.loc, e.type) for e in rejection.errors] == [
        ("event_time", "event_time_out_of_range")
    ]


def test_event_time_bounds_are_configurable_and_use_the_instant_not_the_zone() -> None:
    paris = timezone(timedelta(hours=1))
    values = [_at((NOW + timedelta(minutes=30)).astimezone(paris)), _at(NOW - timedelta(days=2))]
    oks, errs = decode_transactions(
        values, LIMIT, timestamps_ms=[NOW_MS, NOW_MS], max_future_s=3600, max_past_s=86400
    )
    assert [index for index, _ in oks] == [0]
    assert [(index, r.detail) for index, r in errs] == [
        (1, "event_time 2026-11-21T12:00:00+00:00 is 48.0 h before the record's broker "
            "timestamp 2026-11-23T12:00:00+00:00; the limit is 24 h (check the producer's "
            "clock and time zone)"),
    ]  # fmt: skip


def test_event_time_check_skips_unavailable_timestamps() -> None:
    far = NOW + timedelta(days=30)
    assert check_event_time(far, None) is None
    assert check_event_time(far, -1) is None  # Kafka's "no timestamp"
    assert check_event_time(NOW, NOW_MS) is None
    rejection = check_event_time(far, NOW_MS)
    assert rejection is not None
    assert rejection.reason is DeadLetterReason.EVENT_TIME_OUT_OF_RANGE


def test_event_time_check_needs_one_timestamp_per_value() -> None:
    with pytest.raises(ValueError, match="1 timestamps for 2 values"):
        decode_transactions([b"{", b"{"], LIMIT, timestamps_ms=[NOW_MS])


def test_encode_batch_matches_single_encode() -> None:
    messages = samples()
    assert encode_batch(messages) == [encode(m) for m in messages]
    oks, errs = decode_batch(Transaction, encode_batch([messages[0]]), LIMIT)
    assert not errs
    assert oks[0][1] == messages[0]


def test_mask_pans_leaves_short_numbers_and_dates_alone() -> None:
    data = b'{"amount": 123456789012, "t": "2026-11-23T10:00:00+00:00"}'
    assert mask_pans(data) == (data, False)
    masked, found = mask_pans(b"pan=5555555555554444;")
    assert found
    assert masked == b"pan=555555******4444;"
    assert not re.search(rb"\d{13}", masked)
