"""The scorer's Redis state scripts against a real Redis: parts per input partition,
checkpoints moved only from where the writer expects them, epochs that retire a
partition's old parts, and a batch scored before the previous one's write landed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from fraudstream.contracts import Transaction, encode
from fraudstream.features.compute import Event
from fraudstream.features.pipeline import FeaturePipeline, PartKey, PartStates, StateKey
from fraudstream.features.state import LAYOUTS, Entity, id_hash
from fraudstream.localstack.stack import Endpoints
from fraudstream.rules.engine import RulePack
from fraudstream.scoring.core import BatchScorer, InputRecord
from fraudstream.scoring.model import scoring_spec
from fraudstream.scoring.models import ModelSet
from fraudstream.scoring.state import Checkpoint, PartWrite, ScorerState, redis_client
from tests.factories import NOW, transaction

MERCHANT: StateKey = (Entity.MERCHANT, "m-1")


@pytest.fixture
def make_state(endpoints: Endpoints, unique: Callable[[str], str]) -> Callable[[], ScorerState]:
    """Scorer states of one deployment (same prefix), as separate instances would hold."""
    prefix = unique("state")

    def _make() -> ScorerState:
        return ScorerState(redis_client(endpoints.redis_url, 2000), prefix=prefix, partitions=3)

    return _make


def _part(value: float) -> list[float]:
    state = LAYOUTS[Entity.MERCHANT].empty()
    state[0], state[1] = 1000.0, value
    return state


def _write(
    state: ScorerState, partition: int, expected: Checkpoint, end: int, value: float
) -> set[int]:
    key: PartKey = (*MERCHANT, partition)
    return state.save({key: (_part(value), end - 1)}, {partition: PartWrite(expected, end)})


def test_partitions_write_their_own_parts_of_a_shared_entity(
    make_state: Callable[[], ScorerState],
) -> None:
    one, two = make_state(), make_state()  # two instances, each owning one partition
    c0, c1 = one.reset(0, 0), two.reset(1, 0)
    assert _write(one, 0, c0, 10, 3.0) == set()
    assert _write(two, 1, c1, 5, 4.0) == set()
    loaded = make_state().load([MERCHANT])
    assert {p: part[1] for p, part in loaded.states[MERCHANT].items()} == {0: 3.0, 1: 4.0}
    assert loaded.checkpoints == {0: Checkpoint(10, c0.epoch), 1: Checkpoint(5, c1.epoch),
                                  2: None}  # fmt: skip


def test_a_stale_writer_is_refused_and_writes_nothing(
    make_state: Callable[[], ScorerState],
) -> None:
    owner, zombie = make_state(), make_state()
    start = owner.reset(0, 0)
    assert _write(owner, 0, start, 10, 1.0) == set()
    # The zombie scored offsets 0-9 too and thinks the checkpoint is still at 0.
    assert _write(zombie, 0, start, 10, 99.0) == {0}
    assert owner.load([MERCHANT]).states[MERCHANT][0][1] == 1.0
    # A batch with another partition: only the stale partition is refused.
    other = owner.reset(1, 0)
    parts: dict[PartKey, tuple[list[float], int]] = {
        (*MERCHANT, 0): (_part(98.0), 19), (*MERCHANT, 1): (_part(5.0), 0),
    }  # fmt: skip
    refused = zombie.save(parts, {0: PartWrite(start, 20), 1: PartWrite(other, 1)})
    assert refused == {0}
    assert {p: v[1] for p, v in owner.load([MERCHANT]).states[MERCHANT].items()} == {
        0: 1.0, 1: 5.0,
    }  # fmt: skip


def test_a_new_epoch_retires_the_partitions_old_parts(
    make_state: Callable[[], ScorerState],
) -> None:
    state = make_state()
    first = state.reset(0, 0)
    _write(state, 0, first, 10, 1.0)
    rebuilt = state.reset(0, 0)  # a rebuild from the start of the log
    assert rebuilt.epoch != first.epoch
    assert MERCHANT not in state.load([MERCHANT]).states  # the old part reads as absent
    assert _write(state, 0, Checkpoint(10, first.epoch), 20, 2.0) == {0}  # old writer refused
    assert _write(state, 0, rebuilt, 10, 3.0) == set()
    assert state.load([MERCHANT]).states[MERCHANT][0][1] == 3.0


def test_a_batch_scored_before_the_previous_one_is_saved_builds_on_it(
    endpoints: Endpoints, unique: Callable[[str], str]
) -> None:
    """The loop saves batch N on its commit thread while it scores N+1: N+1 must count N's
    payments (from memory), catch N's ids as duplicates, and leave N's pending write as
    it was; saved in order, Redis then holds what one clean pass computes."""
    client = redis_client(endpoints.redis_url, 2000)
    state = ScorerState(client, prefix=unique("overlay"), partitions=1)
    scorer = BatchScorer(
        rules=lambda: RulePack.from_yaml("version: t\nrules: []\n"), models=ModelSet,
        state=state, lists=None,
    )  # fmt: skip
    txs = [transaction(transaction_id=f"tx-{i}", event_time=NOW + timedelta(minutes=i))
           for i in range(6)]  # fmt: skip

    def records(batch: list[Transaction], first_offset: int) -> list[InputRecord]:
        return [InputRecord("transactions", 0, first_offset + i, None, b"card-0001", encode(tx))
                for i, tx in enumerate(batch)]  # fmt: skip

    start = state.reset(0, 0)
    first = scorer.process(records(txs[:3], 0), {0: start})
    assert first.pending_save is not None
    after_first = Checkpoint(3, start.epoch)
    second = scorer.process(
        records([*txs[3:], txs[0]], 3), {0: after_first}, unsaved=first.pending_save
    )
    assert second.dlq_reasons == ["duplicate_id"]  # tx-0 again, known only from memory
    assert not first.degraded
    assert not second.degraded

    pipeline, clean = FeaturePipeline(scoring_spec(None)), PartStates()
    pipeline.transform_parts([Event.from_transaction(tx) for tx in txs[:3]], [0] * 3, clean,
                             [id_hash(tx.transaction_id) for tx in txs[:3]])  # fmt: skip
    card: PartKey = (Entity.CARD, "card-0001", 0)
    assert first.pending_save.parts[card][0] == clean[card[:2]][0]  # untouched by batch two
    scorer.save(first)
    scorer.save(second)
    assert not first.unsaved
    assert not second.unsaved
    pipeline.transform_parts([Event.from_transaction(tx) for tx in txs[3:]], [0] * 3, clean,
                             [id_hash(tx.transaction_id) for tx in txs[3:]])  # fmt: skip
    loaded = state.load([(Entity.CARD, "card-0001")])
    assert loaded.states[(Entity.CARD, "card-0001")][0] == clean[(Entity.CARD, "card-0001")][0]
    assert loaded.checkpoints[0] == Checkpoint(7, start.epoch)
