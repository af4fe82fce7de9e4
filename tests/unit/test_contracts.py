"""Contract validation, batch codec and dead-letter records, without any service."""

from __future__ import annotations

import base64
import re

import orjson
import pytest

from fraudstream.contracts import (
    CONTRACTS,
    Contract,
    DeadLetterReason,
    Rejection,
    Transaction,
    dead_letter,
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


def test_encode_batch_matches_single_encode() -> None:
    messages = samples()
    assert encode_batch(messages) == [encode(m) for m in messages]
    oks, errs = decode_batch(Transaction, encode_batch([messages[0]]), LIMIT)
    assert not errs
    assert oks[0][1] == messages[0]


def test_dead_letter_keeps_original_bytes_and_masks_pans() -> None:
    value = orjson.dumps(transaction_json(card_token="4111 1111 1111 1111"))
    rejection = decode(Transaction, value, LIMIT)
    assert isinstance(rejection, Rejection)
    record = dead_letter(
        rejection, topic="transactions", partition=2, offset=99, timestamp_ms=1,
        key=b"4111111111111111", value=value, headers=[("trace", b"abc")],
        service="scorer", now=NOW,
    )  # fmt: skip
    assert record.reason is DeadLetterReason.PAN_DETECTED
    assert (record.partition, record.offset) == (2, 99)
    assert record.value_redacted
    kept_value = base64.b64decode(record.value_b64 or "")
    assert b"411111******1111" in kept_value
    assert b"4111 1111 1111 1111" not in kept_value
    assert base64.b64decode(record.key_b64 or "") == b"411111******1111"
    assert base64.b64decode(record.headers[0].value_b64 or "") == b"abc"
    assert b"4111111111111111" not in encode(record)


def test_dead_letter_of_clean_record_is_byte_identical() -> None:
    value = b'{"amount": -1}'
    record = dead_letter(
        Rejection(DeadLetterReason.SCHEMA_VIOLATION, "x"), topic="t", partition=0, offset=0,
        timestamp_ms=None, key=None, value=value, headers=None, service="scorer", now=NOW,
    )  # fmt: skip
    assert not record.value_redacted
    assert base64.b64decode(record.value_b64 or "") == value
    assert record.key_b64 is None


def test_mask_pans_leaves_short_numbers_and_dates_alone() -> None:
    data = b'{"amount": 123456789012, "t": "2026-11-23T10:00:00+00:00"}'
    assert mask_pans(data) == (data, False)
    masked, found = mask_pans(b"pan=5555555555554444;")
    assert found
    assert masked == b"pan=555555******4444;"
    assert not re.search(rb"\d{13}", masked)
