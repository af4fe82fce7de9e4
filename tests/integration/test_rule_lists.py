"""Block/allow lists in the real Redis: batch membership in one round trip."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
import redis

from fraudstream.localstack.stack import Endpoints
from fraudstream.rules.lists import RedisLists
from fraudstream.rules.model import ListEntity, ListName
from tests.factories import transaction


def test_batch_hits_only_report_listed_ids(redis_client: redis.Redis) -> None:
    lists = RedisLists(redis_client, prefix=f"test-lists-{uuid.uuid4().hex[:8]}")
    assert lists.add(ListName.BLOCK, ListEntity.CARD, ["card-bad", " card-bad2 "]) == 2
    assert lists.add(ListName.BLOCK, ListEntity.COUNTRY, ["KP"]) == 1
    assert lists.add(ListName.ALLOW, ListEntity.MERCHANT, ["merch-vip"]) == 1
    batch = [
        transaction(transaction_id="a", card_token="card-bad"),
        transaction(transaction_id="b", card_token="card-ok", country="KP"),
        transaction(transaction_id="c", merchant_id="merch-vip", device_id=None, ip=None),
    ]
    hits = lists.hits(batch)
    assert hits[("block", "card")] == frozenset({"card-bad"})
    assert hits[("block", "country")] == frozenset({"KP"})
    assert hits[("allow", "merchant")] == frozenset({"merch-vip"})
    assert hits[("block", "device")] == frozenset()
    assert lists.members(ListName.BLOCK, ListEntity.CARD) == ["card-bad", "card-bad2"]
    assert lists.remove(ListName.BLOCK, ListEntity.CARD, ["card-bad"]) == 1
    assert lists.hits(batch)[("block", "card")] == frozenset()


def test_bad_ids_are_refused(redis_client: redis.Redis) -> None:
    lists = RedisLists(redis_client, prefix=f"test-lists-{uuid.uuid4().hex[:8]}")
    with pytest.raises(ValueError, match="at least one"):
        lists.add(ListName.BLOCK, ListEntity.CARD, ["  "])
    with pytest.raises(ValueError, match="longer than 64"):
        lists.add(ListName.BLOCK, ListEntity.CARD, ["x" * 65])


def test_fraudctl_lists_writes_where_the_scorer_reads(redis_client: redis.Redis,
                                                      endpoints: Endpoints) -> None:  # fmt: skip
    """`fraudctl lists add` honours FRAUD_REDIS_PREFIX, as the scorer and the review
    service do (it used to write under the default prefix whatever the setting)."""
    prefix = f"test-cli-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka_bootstrap,
           "REDIS_URL": endpoints.redis_url, "FRAUD_REDIS_PREFIX": prefix}  # fmt: skip
    added = subprocess.run(
        [sys.executable, "-c", "from fraudstream.cli import main; main()",
         "lists", "add", "block", "device", "dev-cli-1"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    scorer_lists = RedisLists(redis_client, prefix=f"{prefix}:list")
    assert scorer_lists.members(ListName.BLOCK, ListEntity.DEVICE) == ["dev-cli-1"]
    assert "dev-cli-1" not in RedisLists(redis_client).members(ListName.BLOCK, ListEntity.DEVICE)
