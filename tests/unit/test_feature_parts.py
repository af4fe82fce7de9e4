"""State split by input partition: one partition reads exactly what a single-state replay
computes; a part is a function of its own partition's log (any batching, any interleaving
with other partitions); duplicates change nothing; stored parts carry their layout."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fraudstream.contracts import Transaction
from fraudstream.features.compute import Event
from fraudstream.features.pipeline import FeaturePipeline, PartStates, replay
from fraudstream.features.spec import FeatureConfig
from fraudstream.features.state import (
    LAYOUT_VERSION,
    LAYOUTS,
    Entity,
    combine,
    decode_part,
    encode_part,
    id_hash,
    part_header,
)
from tests.factories import NOW, transaction

PIPELINE = FeaturePipeline(FeatureConfig().resolve())


@st.composite
def streams(draw: st.DrawFn) -> list[tuple[int, Transaction]]:
    """(partition, transaction) in log order; a card always lands in one partition."""
    n = draw(st.integers(1, 40))
    gaps = draw(st.lists(st.floats(0, 3 * 86400), min_size=n, max_size=n))
    cards = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    devices = draw(st.lists(st.sampled_from([None, "d1", "d2"]), min_size=n, max_size=n))
    repeats = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    t, out = NOW, []
    for i in range(n):
        t += timedelta(seconds=gaps[i])
        tx_id = f"tx-{i - 1}" if repeats[i] and i > 0 else f"tx-{i}"
        out.append((cards[i] % 2, transaction(
            transaction_id=tx_id, event_time=t, card_token=f"card-{cards[i]}",
            amount=1.0 + i, device_id=devices[i], merchant_id=f"m-{i % 2}",
        )))  # fmt: skip
    return out


def _fold(items: list[tuple[int, Transaction]], batch: int, states: PartStates) -> None:
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        PIPELINE.transform_parts(
            [Event.from_transaction(tx) for _, tx in chunk], [p for p, _ in chunk], states,
            [id_hash(tx.transaction_id) for _, tx in chunk],
        )  # fmt: skip


def _bits(parts: dict[int, list[float]]) -> dict[int, bytes]:
    return {p: np.array(v).tobytes() for p, v in parts.items()}


def test_one_partition_computes_exactly_what_the_offline_replay_does() -> None:
    txs = [
        transaction(transaction_id=f"tx-{i}", event_time=NOW + timedelta(minutes=7 * i),
                    merchant_id=f"m-{i % 3}", device_id=f"d-{i % 2}")
        for i in range(50)
    ]  # fmt: skip
    rows, admitted = PIPELINE.transform_parts(
        [Event.from_transaction(tx) for tx in txs], [0] * len(txs), PartStates()
    )
    assert all(admitted)
    assert np.array_equal(rows.view(np.uint32), replay(PIPELINE, txs).view(np.uint32))


@given(streams(), st.integers(1, 7))
def test_a_partitions_part_depends_only_on_its_own_log(
    items: list[tuple[int, Transaction]], batch: int
) -> None:
    """Interleaved with the other partition in batches, or replayed alone in one go: every
    part of partition 0 comes out bit-identical."""
    mixed = PartStates()
    _fold(items, batch, mixed)
    alone = PartStates()
    _fold([item for item in items if item[0] == 0], len(items), alone)
    for key, parts in alone.items():
        assert _bits({0: parts[0]}) == _bits({0: mixed[key][0]}), key


def test_a_repeated_transaction_id_is_refused_and_changes_nothing() -> None:
    tx = transaction(transaction_id="tx-9")
    states = PartStates()
    _rows, first = PIPELINE.transform_parts([Event.from_transaction(tx)], [0], states,
                                            [id_hash("tx-9")])  # fmt: skip
    before = {key: _bits(parts) for key, parts in states.items()}
    later = tx.model_copy(update={"event_time": NOW + timedelta(hours=1)})
    rows, second = PIPELINE.transform_parts([Event.from_transaction(later)], [0], states,
                                            [id_hash("tx-9")])  # fmt: skip
    assert (first, second, rows.shape[0]) == ([True], [False], 0)
    assert {key: _bits(parts) for key, parts in states.items()} == before


def test_parts_combine_to_the_decayed_sum_of_both_histories() -> None:
    layout = LAYOUTS[Entity.MERCHANT]
    a, b = layout.empty(), layout.empty()
    a[0], b[0] = 1000.0, 1000.0 + 3600.0  # one hour apart
    for i in range(1, 1 + len(layout.windows)):
        a[i], b[i] = 2.0, 1.0
    merged = combine(layout, [a, b])
    assert merged[0] == b[0]
    hour = layout.windows.index(3600.0) + 1
    assert merged[hour] == pytest.approx(1.0 + 2.0 * math.exp(-1.0))
    assert combine(layout, [a]) == a
    assert combine(layout, [a]) is not a


def test_recency_sets_keep_the_most_recent_keys_of_all_parts() -> None:
    layout = LAYOUTS[Entity.DEVICE]
    cards = layout.slot("cards")
    a, b = layout.empty(), layout.empty()
    a[0], b[0] = 10.0, 20.0
    for j, (key, when) in enumerate([(1.0, 1.0), (2.0, 9.0), (3.0, 3.0)]):
        a[cards.offset + 2 * j], a[cards.offset + 2 * j + 1] = key, when
    for j, (key, when) in enumerate([(4.0, 19.0), (5.0, 15.0), (2.0, 2.0)]):
        b[cards.offset + 2 * j], b[cards.offset + 2 * j + 1] = key, when
    merged = combine(layout, [a, b])
    kept = merged[cards.offset : cards.offset + cards.width]
    assert list(zip(kept[0::2], kept[1::2], strict=True)) == [
        (4.0, 19.0), (5.0, 15.0), (2.0, 9.0), (3.0, 3.0)
    ]  # fmt: skip


def test_stored_parts_carry_layout_epoch_and_offset() -> None:
    state = LAYOUTS[Entity.IP].empty()
    state[1] = 1 / 3
    blob = encode_part(state, epoch=77, offset=12_345)
    header = part_header(blob)
    assert header is not None
    assert (header.version, header.epoch, header.offset) == (LAYOUT_VERSION, 77, 12_345)
    decoded = decode_part(Entity.IP, blob)
    assert decoded is not None
    assert np.array_equal(decoded, state, equal_nan=True)
    older = bytes([LAYOUT_VERSION - 1]) + blob[1:]
    assert decode_part(Entity.IP, older) is None  # another layout: rebuilt, never misread
    assert decode_part(Entity.CARD, blob) is None
    assert part_header(b"\x02") is None
