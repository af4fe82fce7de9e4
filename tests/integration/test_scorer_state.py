"""The scorer's Redis state scripts against a real Redis: atomic writes, partition fencing
(a zombie cannot overwrite its successor's state) and detection of state Redis lost."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import cast

import pytest
import redis

from fraudstream.contracts import Transaction, encode
from fraudstream.features.compute import Event
from fraudstream.features.pipeline import FeaturePipeline, StateCache, StateKey
from fraudstream.features.state import LAYOUTS, Entity, decode_state
from fraudstream.localstack.stack import Endpoints
from fraudstream.rules.engine import RulePack
from fraudstream.scoring.core import BatchScorer, InputRecord
from fraudstream.scoring.model import scoring_spec
from fraudstream.scoring.models import ModelSet
from fraudstream.scoring.state import DECISIONS, Memo, ScorerState, StateFenced, redis_client
from tests.factories import NOW, transaction

PARTITION = ("transactions", 3)
CARD: StateKey = (Entity.CARD, "card-1")
CARD_0001: StateKey = (Entity.CARD, "card-0001")  # the factories' card


@pytest.fixture
def make_state(endpoints: Endpoints, unique: Callable[[str], str]) -> Callable[[], ScorerState]:
    """Scorer states of one deployment (same prefix), as separate instances would hold."""
    prefix = unique("state")

    def _make() -> ScorerState:
        return ScorerState(redis_client(endpoints.redis_url, 2000), prefix=prefix, memo_ttl_s=600)

    return _make


def _card(value: float) -> StateCache:
    states = StateCache()
    states[CARD] = LAYOUTS[Entity.CARD].empty()
    states[CARD][1] = value
    return states


def test_states_and_memos_are_written_together_with_ttls(
    make_state: Callable[[], ScorerState], redis_client: redis.Redis
) -> None:
    state = make_state()
    state.load([CARD], ["tx-1"], {PARTITION: 0})
    memo = Memo(3, 0, ((DECISIONS, b"card-1", b'{"action":"approve"}'),))
    state.save(_card(7.0), {"tx-1": memo}, {PARTITION: 0})

    loaded = state.load([CARD], ["tx-1", "tx-2"], {PARTITION: 1})
    assert loaded.states[CARD][1] == 7.0
    assert loaded.memos == {"tx-1": memo}
    assert 0 < int(redis_client.ttl(state.memo_key("tx-1"))) <= 600  # type: ignore[arg-type]
    card_ttl = int(redis_client.ttl(state.state_key(CARD)))  # type: ignore[arg-type]
    assert card_ttl > LAYOUTS[Entity.CARD].ttl_s


def test_a_zombie_cannot_write_after_the_partition_moved(
    make_state: Callable[[], ScorerState],
) -> None:
    zombie, successor = make_state(), make_state()
    zombie.load([CARD], [], {PARTITION: 0})
    zombie.save(_card(1.0), {}, {PARTITION: 9})

    successor.load([CARD], [], {PARTITION: 10})  # the rebalance gave it the partition
    successor.save(_card(2.0), {}, {PARTITION: 19})
    with pytest.raises(StateFenced):
        zombie.save(_card(99.0), {}, {PARTITION: 29})
    with pytest.raises(StateFenced):
        zombie.load([CARD], [], {PARTITION: 20})
    assert successor.load([CARD], [], {PARTITION: 20}).states[CARD][1] == 2.0

    # After its own revocation and a new assignment the old instance may claim again,
    # and then it is the successor whose writes are refused.
    zombie.release([PARTITION])
    assert zombie.load([CARD], [], {PARTITION: 20}).states[CARD][1] == 2.0
    with pytest.raises(StateFenced):
        successor.save(_card(3.0), {}, {PARTITION: 29})


def test_a_gap_between_saved_state_and_the_committed_position_is_reported(
    make_state: Callable[[], ScorerState], redis_client: redis.Redis
) -> None:
    first = make_state()
    first.load([CARD], [], {PARTITION: 0})
    first.save(_card(1.0), {}, {PARTITION: 499})
    # A restart resuming right after the saved offsets (or after one commit marker): no gap.
    assert make_state().load([CARD], [], {PARTITION: 500}).gaps == {}
    assert make_state().load([CARD], [], {PARTITION: 501}).gaps == {}
    # Redis lost the last writes (AOF everysec, failover): Kafka committed up to 1,000.
    assert make_state().load([CARD], [], {PARTITION: 1000}).gaps == {PARTITION: 500}
    # Only a claim compares; an owner's later batches do not.
    owner = make_state()
    owner.load([CARD], [], {PARTITION: 0})
    assert owner.load([CARD], [], {PARTITION: 5000}).gaps == {}
    # The high-water mark never moves back.
    owner.save(_card(1.0), {}, {PARTITION: 10})
    assert make_state().load([CARD], [], {PARTITION: 1000}).gaps == {PARTITION: 500}
    assert int(redis_client.hget(owner.fence_key(PARTITION), "hwm")) == 499  # type: ignore[arg-type]


def test_an_emptied_redis_is_claimed_again_not_mistaken_for_a_zombie(
    make_state: Callable[[], ScorerState],
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = make_state()
    state.load([CARD], [], {PARTITION: 0})
    state.save(_card(4.0), {}, {PARTITION: 9})
    redis_client.delete(state.fence_key(PARTITION), state.state_key(CARD))  # data loss

    with caplog.at_level(logging.WARNING, logger="fraudstream.scoring.state"):
        loaded = state.load([CARD], [], {PARTITION: 10})
    assert loaded.states[CARD] == LAYOUTS[Entity.CARD].empty()
    assert "Redis lost its data" in caplog.text
    state.save(_card(5.0), {}, {PARTITION: 19})  # writes are accepted again
    assert state.load([CARD], [], {PARTITION: 20}).states[CARD][1] == 5.0


def test_a_batch_scored_before_the_previous_one_is_saved_builds_on_it(
    endpoints: Endpoints, unique: Callable[[str], str]
) -> None:
    """The loop saves batch N on its commit thread while it scores N+1: N+1 must count N's
    payments (from memory), catch N's ids as duplicates, and leave N's pending write as
    it was; saved in order, Redis then holds what one clean pass computes."""
    client = redis_client(endpoints.redis_url, 2000)
    scorer = BatchScorer(
        rules=lambda: RulePack.from_yaml("version: t\nrules: []\n"), models=ModelSet,
        state=ScorerState(client, prefix=unique("overlay")), lists=None,
    )  # fmt: skip
    txs = [transaction(transaction_id=f"tx-{i}", event_time=NOW + timedelta(minutes=i))
           for i in range(6)]  # fmt: skip

    def records(batch: list[Transaction], first_offset: int) -> list[InputRecord]:
        return [InputRecord("transactions", 0, first_offset + i, None, b"card-0001", encode(tx))
                for i, tx in enumerate(batch)]  # fmt: skip

    first = scorer.process(records(txs[:3], 0))
    second = scorer.process(records([*txs[3:], txs[0]], 3), unsaved=first.pending_save)
    assert second.dlq_reasons == ["duplicate_id"]  # tx-0 again, known only from memory

    pipeline, clean = FeaturePipeline(scoring_spec(None)), StateCache()
    pipeline.transform([Event.from_transaction(tx) for tx in txs[:3]], clean)
    assert first.pending_save is not None
    assert first.pending_save.states[CARD_0001] == clean[CARD_0001]  # untouched by batch two
    scorer.save(first)
    scorer.save(second)
    pipeline.transform([Event.from_transaction(tx) for tx in txs[3:]], clean)
    blob = cast(bytes, client.get(f"{scorer.state.prefix}:card:card-0001"))  # type: ignore[union-attr]
    assert decode_state(Entity.CARD, blob) == clean[CARD_0001]
