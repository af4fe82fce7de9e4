"""Offline replay (training) and the running scorer agree to the bit.

Labels and then payments are produced to Kafka; the real scorer loop and its label folder
consume them; afterwards every entity's state in Redis, every merchant's label book and
every decision's score equal what the training replay computes from the same history.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from fraudstream.contracts import Label, LabelSource, Transaction, Verdict, encode
from fraudstream.features.pipeline import StateCache, label_books, replay
from fraudstream.features.state import LAYOUTS, Entity
from fraudstream.localstack.stack import Endpoints
from fraudstream.scoring.labels import LabelFolder
from fraudstream.scoring.service import build
from fraudstream.simulator.population import legit_transactions, make_population
from tests.integration.conftest import consume_n
from tests.integration.scorer_support import deployment_env, settings_from_env, train_small_model
from tests.waiting import await_condition

START = datetime(2026, 11, 1, tzinfo=UTC)
_TXIDS = LAYOUTS[Entity.CARD].slot("transactions")  # serving's duplicate check only


def _history(n: int) -> tuple[list[Transaction], list[Label]]:
    population = make_population(150, 30, 11)
    txs = list(itertools.islice(legit_transactions(population, START, 0.003, 11, "par"), n))
    labels = [
        Label(
            transaction_id=tx.transaction_id, verdict=Verdict.FRAUD,
            source=LabelSource.CHARGEBACK, labelled_at=tx.event_time + timedelta(hours=30),
            merchant_id=tx.merchant_id, card_token=tx.card_token, event_time=tx.event_time,
            device_id=tx.device_id, ip=tx.ip,
        )
        for tx in txs[::40]
    ]  # fmt: skip
    # A repeated label (a feed sending twice) and a later second verdict count once.
    labels += [labels[0], labels[1].model_copy(update={"source": LabelSource.REVIEWER,
               "labelled_at": labels[1].labelled_at + timedelta(days=2)})]  # fmt: skip
    return txs, labels


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("registry")
    assert train_small_model(root).promoted
    return root


@contextmanager
def _serving(env: dict[str, str]) -> Iterator[tuple[object, LabelFolder]]:
    settings = settings_from_env(env)
    loop, watcher = build(settings)
    assert loop.scorer.state is not None
    folder = LabelFolder(settings, loop.bootstrap, loop.scorer.state)
    stop = threading.Event()
    worker = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    folder.start()
    worker.start()
    try:
        yield watcher, folder
    finally:
        stop.set()
        worker.join(30)
        folder.stop()
    assert not worker.is_alive()


def test_the_running_scorer_and_the_training_replay_agree_to_the_bit(
    endpoints: Endpoints,
    registry_dir: Path,
    admin: AdminClient,
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
) -> None:
    txs, labels = _history(3000)
    # Longer than the label delay plus a day: windows and label risk matter.
    assert txs[-1].event_time - txs[0].event_time > timedelta(days=9)
    # One input partition: each entity has one part, which must equal the replay's state.
    env = deployment_env(endpoints, registry_dir, admin, FRAUD_TOPIC_PARTITIONS="1")
    settings = settings_from_env(env)
    producer = make_producer()
    for label in labels:  # labels first: each must count from its labelled_at, not earlier
        producer.produce(settings.topic_labels, encode(label), key=label.transaction_id.encode())
    assert producer.flush(30) == 0
    reader = make_consumer(settings.topic_decisions)
    with _serving(env) as (watcher, folder):
        state = folder.state
        ends = {q: admin_end(make_consumer, settings.topic_labels, q) for q in range(3)}
        await_condition(lambda: all((c := state.checkpoint(q, labels=True)) is not None
                           and c.offset >= end for q, end in ends.items()),
               what="labels to be folded")  # fmt: skip
        for tx in txs:
            producer.produce(settings.topic_transactions, encode(tx), key=tx.card_token.encode())
            producer.poll(0)
        assert producer.flush(30) == 0
        decisions = [orjson.loads(m.value() or b"") for m in consume_n(reader, len(txs), 120)]
        pipeline = watcher.current.pipeline  # type: ignore[attr-defined]
        champion = watcher.current.champion  # type: ignore[attr-defined]
        assert champion is not None
        offline_states = StateCache()
        offline = replay(pipeline, txs, labels, batch_size=10_000, states=offline_states)
        loaded = state.load(list(offline_states))

    assert len(decisions) == len(txs)
    assert not [d for d in decisions if d["path"] == "degraded"]
    for key, expected in offline_states.items():
        online = np.array(loaded.states[key][0])
        expected_arr = np.array(expected)
        if key[0] is Entity.CARD:  # serving also remembers recent ids, training does not
            online[_TXIDS.offset : _TXIDS.offset + _TXIDS.width] = 0.0
        assert online.tobytes() == expected_arr.tobytes(), key
    books = label_books(labels)
    assert {m: b.entries for m, b in loaded.labels.items()} == {
        m: b.entries for m, b in books.items()
    }
    # The decisions' scores come from the same feature rows the replay computes.
    names = pipeline.spec.names
    for entity in ("merchant", "device", "ip"):
        assert np.nanmax(offline[:, names.index(f"{entity}_label_risk_30d")]) > 0, entity
    expected_scores = champion.predict(offline)[0]
    by_id = {d["transaction_id"]: d["score"] for d in decisions}
    online_scores = np.array([by_id[tx.transaction_id] for tx in txs], dtype=np.float64)
    assert np.allclose(online_scores, expected_scores, rtol=0, atol=1e-9)
    # What the drift monitor sees on each ML decision is the replay's feature values.
    assert champion.monitored
    assert "amount_log" in champion.monitored
    sent = {d["transaction_id"]: (d["path"], d["monitored"]) for d in decisions}
    for i, tx in enumerate(txs):
        path, monitored = sent[tx.transaction_id]
        values = {n: float(offline[i, names.index(n)]) for n in champion.monitored}
        present = {n: v for n, v in values.items() if not np.isnan(v)}
        assert monitored == (present if path == "ml" else None), tx.transaction_id


def admin_end(make_consumer: Callable[..., Consumer], topic: str, partition: int) -> int:
    """The end offset of one partition."""
    consumer = make_consumer(topic)
    _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    return int(high)
