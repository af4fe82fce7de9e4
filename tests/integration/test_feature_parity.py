"""Offline replay (training) and online serving (Redis state) give bit-identical features."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import redis

from fraudstream.contracts import Label, LabelSource, Transaction, Verdict
from fraudstream.features.compute import Event
from fraudstream.features.pipeline import FeaturePipeline, apply_label, replay, state_keys, timeline
from fraudstream.features.spec import FeatureConfig
from fraudstream.features.state import Entity
from fraudstream.localstack.stack import Endpoints
from fraudstream.scoring.state import ScorerState
from fraudstream.scoring.state import redis_client as scorer_redis
from fraudstream.simulator.population import legit_transactions, make_population

START = datetime(2026, 11, 1, tzinfo=UTC)


def _history(n: int) -> tuple[list[Transaction], list[Label]]:
    population = make_population(150, 30, 11)
    txs = list(itertools.islice(legit_transactions(population, START, 0.006, 11, "par"), n))
    labels = [
        Label(
            transaction_id=tx.transaction_id, verdict=Verdict.FRAUD,
            source=LabelSource.CHARGEBACK, labelled_at=tx.event_time + timedelta(hours=30),
            merchant_id=tx.merchant_id, card_token=tx.card_token, event_time=tx.event_time,
        )
        for tx in txs[::40]
    ]  # fmt: skip
    return txs, labels


def test_replay_and_redis_serving_agree_to_the_bit(
    redis_client: redis.Redis, endpoints: Endpoints
) -> None:
    txs, labels = _history(3000)
    assert txs[-1].event_time - txs[0].event_time > timedelta(days=5)  # windows and labels matter
    pipeline = FeaturePipeline(FeatureConfig(producer_features={"auth_3ds": None}).resolve())

    offline = replay(pipeline, txs, labels, batch_size=10_000)

    # The scorer's own Redis state path (its read and write scripts), unfenced here.
    store = ScorerState(
        scorer_redis(endpoints.redis_url, 2000), prefix=f"parity-{uuid.uuid4().hex[:8]}"
    )
    online_parts = []
    for step in timeline(txs, labels, batch_size=64):  # the scorer's micro-batches
        if step.label is not None:
            key = (Entity.MERCHANT, step.label.merchant_id or "")
            states = store.load([key], [], {}).states
            apply_label(step.label, states)
            store.save(states, {}, {})
            continue
        events = [Event.from_transaction(tx) for tx in step.transactions]
        keys = list(dict.fromkeys(k for ev in events for k in state_keys(ev)))
        states = store.load(keys, [], {}).states
        online_parts.append(pipeline.transform(events, states))
        store.save(states, {}, {})
    online = np.vstack(online_parts)

    assert offline.shape == (len(txs), len(pipeline.spec.names))
    assert np.array_equal(offline.view(np.uint32), online.view(np.uint32))
    # The comparison is meaningful: features vary and labels reached merchant state.
    names = pipeline.spec.names
    assert np.nanstd(offline[:, names.index("card_count_1d")]) > 0
    assert np.nanmax(offline[:, names.index("merchant_fraud_labels_30d")]) > 0
    keys = list(redis_client.scan_iter(match=f"{store.prefix}:card:*", count=1000))
    assert keys
    ttl = int(redis_client.ttl(keys[0]))  # type: ignore[arg-type]
    assert 0 < ttl <= 61 * 86400
