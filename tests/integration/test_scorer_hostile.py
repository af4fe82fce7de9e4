"""Hostile input: records near and over the message-size limits must not stop a partition.

Inputs of 900 KB and 1.5 MB (the broker accepts both), a dead-letter topic that takes at
most 150 KB, a review topic (5.2 KB) too small for a review case with a full feature map: every
output is bounded by what its topic accepts, and the valid payments after them are
decided within seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from fraudstream.contracts import encode
from fraudstream.localstack.stack import Endpoints
from fraudstream.scoring.service import build
from fraudstream.simulator import SimulationConfig
from fraudstream.trainer import simulated_history
from tests.integration.conftest import consume_n
from tests.integration.scorer_support import deployment_env, settings_from_env

DLQ_TOPIC_MAX = 150_000
REVIEW_TOPIC_MAX = 5_200  # the least the scorer starts with (5,120), less than a full review case
DECIDED_WITHIN_S = 10.0


def _limit(admin: AdminClient, topic: str, value: int) -> None:
    entry = ConfigEntry("max.message.bytes", str(value),
                        incremental_operation=AlterConfigOpType.SET)  # fmt: skip
    update = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
    admin.incremental_alter_configs([update])[update].result()


def test_oversized_records_are_bounded_and_valid_ones_after_them_flow(
    endpoints: Endpoints,
    admin: AdminClient,
    tmp_path: Path,
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
) -> None:
    empty = tmp_path / "registry"  # rules only: large amounts go to review
    empty.mkdir()
    env = deployment_env(endpoints, empty, admin, FRAUD_TOPIC_PARTITIONS="1")
    settings = settings_from_env(env)
    _limit(admin, settings.topic_dlq, DLQ_TOPIC_MAX)
    _limit(admin, settings.topic_review, REVIEW_TOPIC_MAX)
    txs = simulated_history(SimulationConfig(seed=5, n_transactions=100, days=2)).transactions
    before, after = txs[:20], txs[20:40]
    big_case = txs[40].model_copy(update={
        "amount": 5000.0, "features": {f"feature_{i:02d}_" + "x" * 53: 1.0 for i in range(64)},
    })  # fmt: skip
    producer = make_producer({"message.max.bytes": 4_000_000})
    for tx in [*before, big_case]:
        producer.produce(settings.topic_transactions, encode(tx), key=tx.card_token.encode())
    for size in (900_000, 1_500_000):
        producer.produce(settings.topic_transactions, b"{" + b"x" * size, key=b"big")
    assert producer.flush(30) == 0

    loop, _watcher = build(settings)
    stop = threading.Event()
    worker = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    worker.start()
    try:
        decisions = make_consumer(settings.topic_decisions)
        dlq = make_consumer(settings.topic_dlq)
        first = consume_n(decisions, len(before) + 1, timeout_s=60)
        assert len(first) == len(before) + 1
        sent_at = time.monotonic()
        for tx in after:
            producer.produce(settings.topic_transactions, encode(tx), key=tx.card_token.encode())
        assert producer.flush(30) == 0
        later = consume_n(decisions, len(after), timeout_s=60)
        took = time.monotonic() - sent_at
        letters = consume_n(dlq, 3, timeout_s=30)
    finally:
        stop.set()
        worker.join(30)
    assert not worker.is_alive()
    assert took < DECIDED_WITHIN_S, f"valid payments after the big ones took {took:.1f} s"
    decided = {orjson.loads(m.value() or b"")["transaction_id"] for m in [*first, *later]}
    assert decided == {tx.transaction_id for tx in [*before, big_case, *after]}

    bodies = [orjson.loads(m.value() or b"") for m in letters]
    assert all(len(m.value() or b"") <= DLQ_TOPIC_MAX for m in letters)
    oversize = sorted((b for b in bodies if b["reason"] == "oversize"),
                      key=lambda b: b["original_size_bytes"])  # fmt: skip
    assert [b["original_size_bytes"] for b in oversize] == [900_001, 1_500_001]
    assert all(b["value_truncated"] for b in oversize)
    (too_large,) = [b for b in bodies if b["reason"] == "output_too_large"]
    assert "review" in too_large["detail"]
