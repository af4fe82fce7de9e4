"""The transaction memo's binary encoding (what a replay re-emits must be byte-identical)."""

from __future__ import annotations

from fraudstream.scoring.state import DECISIONS, DLQ, REVIEW, Memo


def test_memo_round_trips_every_output_byte_for_byte() -> None:
    memo = Memo(
        partition=11,
        offset=2**40 + 7,
        outputs=(
            (DECISIONS, b"card-\xe2\x82\xac", b'{"action":"review","score":0.93}'),
            (REVIEW, b"tx-1", b"\x00binary\xff" * 100),
            (DLQ, None, b""),
        ),
    )
    assert Memo.decode(memo.encode()) == memo


def test_memo_without_outputs() -> None:
    memo = Memo(0, 0, ())
    assert Memo.decode(memo.encode()) == memo
