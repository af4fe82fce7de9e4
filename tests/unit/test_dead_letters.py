"""Dead-letter records: original bytes kept with PANs masked, cut to a size bound."""

from __future__ import annotations

import base64
import re

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fraudstream.contracts import (
    DeadLetter,
    DeadLetterReason,
    Rejection,
    Transaction,
    dead_letter,
    decode,
    encode,
    mask_pan_bytes,
)
from tests.factories import NOW, transaction_json

LIMIT = 64 * 1024
OVERSIZE = Rejection(DeadLetterReason.OVERSIZE, "record is too big")
PAN_RUN = re.compile(rb"(?<![0-9])[0-9]{13,19}(?![0-9])")


def _letter(
    value: bytes | None,
    *,
    key: bytes | None = None,
    headers: list[tuple[str, bytes | None]] | None = None,
    max_bytes: int | None = None,
    rejection: Rejection = OVERSIZE,
) -> DeadLetter:
    return dead_letter(
        rejection, topic="transactions", partition=2, offset=99, timestamp_ms=1, key=key,
        value=value, headers=headers, service="scorer", now=NOW, max_bytes=max_bytes,
    )  # fmt: skip


def _kept(b64: str | None) -> bytes:
    return base64.b64decode(b64 or "")


def test_dead_letter_keeps_original_bytes_and_masks_pans() -> None:
    value = orjson.dumps(transaction_json(card_token="4111 1111 1111 1111"))
    rejection = decode(Transaction, value, LIMIT)
    assert isinstance(rejection, Rejection)
    record = _letter(
        value, key=b"4111111111111111", headers=[("trace", b"abc")], rejection=rejection
    )
    assert record.reason is DeadLetterReason.PAN_DETECTED
    assert (record.partition, record.offset) == (2, 99)
    assert record.value_redacted
    kept_value = _kept(record.value_b64)
    assert b"411111******1111" in kept_value
    assert b"4111 1111 1111 1111" not in kept_value
    assert _kept(record.key_b64) == b"411111******1111"
    assert _kept(record.headers[0].value_b64) == b"abc"
    assert b"4111111111111111" not in encode(record)
    assert record.original_size_bytes == len(value)
    assert (record.value_truncated, record.key_truncated, record.headers_truncated) == (
        False,
        False,
        False,
    )


def test_dead_letter_of_clean_record_is_byte_identical() -> None:
    value = b'{"amount": -1}'
    record = _letter(value)
    assert not record.value_redacted
    assert _kept(record.value_b64) == value
    assert record.key_b64 is None


def test_pans_in_header_names_and_values_and_key_are_masked() -> None:
    record = _letter(
        b"{}",
        key=b"card 5555-5555-5555-4444",
        headers=[("x-pan-5555555555554444", b"pan=5555 5555 5555 4444"), ("empty", None)],
    )
    assert record.value_redacted
    assert _kept(record.key_b64) == b"card 555555******4444"
    assert [(h.key, h.value_b64) for h in record.headers] == [
        ("x-pan-555555******4444", base64.b64encode(b"pan=555555******4444").decode()),
        ("empty", None),
    ]
    assert b"5555555555554444" not in encode(record)


def test_a_header_name_cut_to_256_characters_shows_no_pan() -> None:
    names = ["a" * 240 + "4111111111111111" + "123456789", "b" * 250 + "4111111111111111"]
    record = _letter(b"{}", headers=[(name, None) for name in names])
    assert [len(h.key) for h in record.headers] == [256, 256]
    assert all(not PAN_RUN.search(h.key.encode()) for h in record.headers)
    assert record.headers[0].key.endswith("a411111******1111")
    assert record.headers[1].key.endswith("b411111")  # the masked PAN is cut, not revealed


def test_mask_pan_bytes_is_for_the_dead_letters_kafka_key() -> None:
    assert mask_pan_bytes(b"4111 1111 1111 1111") == b"411111******1111"
    assert mask_pan_bytes(b"card-0001") == b"card-0001"
    assert mask_pan_bytes(None) is None


def test_900_kb_value_is_cut_to_fit_one_megabyte() -> None:
    value = b"x" * 900_000
    record = _letter(value, key=b"card-0001", headers=[("trace", b"abc")], max_bytes=1_000_000)
    encoded = encode(record)
    assert 999_990 < len(encoded) <= 1_000_000  # base64 rounding leaves a few bytes unused
    assert record.value_truncated
    assert record.original_size_bytes == 900_000
    kept = _kept(record.value_b64)
    assert kept == value[: len(kept)]
    assert (record.key_truncated, record.headers_truncated) == (False, False)
    assert _kept(record.key_b64) == b"card-0001"
    assert DeadLetter.model_validate_json(encoded) == record


def test_record_that_fits_is_not_cut() -> None:
    value = b"x" * 600_000  # 800,000 characters of base64
    unbounded = _letter(value)
    assert _letter(value, max_bytes=1_000_000) == unbounded
    assert not unbounded.value_truncated


def test_oversized_headers_are_dropped_largest_first() -> None:
    headers: list[tuple[str, bytes | None]] = [
        ("small", b"a"), ("huge", b"h" * 5000), ("medium", b"m" * 1000)
    ]  # fmt: skip
    record = _letter(b"v" * 100, headers=headers, max_bytes=2500)
    assert len(encode(record)) <= 2500
    assert [h.key for h in record.headers] == ["small", "medium"]
    assert record.headers_truncated
    assert not record.value_truncated
    assert _kept(record.value_b64) == b"v" * 100


def test_more_than_64_headers_are_flagged() -> None:
    record = _letter(b"{}", headers=[(f"h{i}", b"") for i in range(70)])
    assert len(record.headers) == 64
    assert record.headers_truncated


def test_a_huge_key_is_cut_after_the_headers_are_gone() -> None:
    record = _letter(b"v" * 100, key=b"k" * 5000, headers=[("trace", b"abc")], max_bytes=2000)
    assert len(encode(record)) <= 2000
    assert record.key_truncated
    assert record.headers_truncated
    assert record.headers == []
    assert _kept(record.key_b64) == b"k" * len(_kept(record.key_b64))
    assert record.value_b64 == ""
    assert record.value_truncated


def test_cutting_a_long_digit_run_cannot_expose_a_pan() -> None:
    # 25 digits are not PAN-like, so they are kept whole; a cut inside them could be.
    value = b"a" * 599 + b"4111111111111111" + b"123456789"  # 599 + 16: a 3-byte cut
    assert _kept(_letter(value).value_b64) == value
    smallest = len(encode(_letter(b"a" * 599)))
    cuts = [_kept(_letter(value, max_bytes=smallest + extra).value_b64) for extra in range(40)]
    assert all(not PAN_RUN.search(kept) for kept in cuts)
    assert any(kept.endswith(b"411111******1111") for kept in cuts)  # a cut after 16 digits


def test_per_field_errors_go_when_nothing_else_is_left_to_cut() -> None:
    rejection = decode(Transaction, b"{}", LIMIT)
    assert isinstance(rejection, Rejection)
    assert len(rejection.errors) > 10
    record = _letter(b"v" * 1000, max_bytes=1000, rejection=rejection)
    assert len(encode(record)) <= 1000
    assert record.errors == []
    assert record.detail == rejection.detail


def test_a_bound_too_small_for_the_position_is_an_error() -> None:
    with pytest.raises(ValueError, match="max_bytes=100 cannot hold"):
        _letter(b"v", max_bytes=100)


@given(
    st.binary(max_size=6000),
    st.binary(max_size=300) | st.none(),
    st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=800)), max_size=5),
    st.integers(min_value=700, max_value=8000),
)
def test_the_bound_always_holds(
    value: bytes, key: bytes | None, headers: list[tuple[str, bytes | None]], max_bytes: int
) -> None:
    record = _letter(value, key=key, headers=headers, max_bytes=max_bytes)
    encoded = encode(record)
    assert len(encoded) <= max_bytes
    kept = _kept(record.value_b64)
    assert record.value_truncated == (len(kept) < len(mask_pan_bytes(value) or b""))
    assert record.original_size_bytes == len(value)
