"""Rule packs on the compacted rules topic: every follower runs the same version, a broken
publication is refused, and a scorer decides with the published pack."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from fraudstream.contracts import RulePackEvent, encode
from fraudstream.localstack.stack import Endpoints
from fraudstream.rules.published import PublishedRules, publish
from fraudstream.simulator import SimulationConfig
from fraudstream.trainer import simulated_history
from tests.integration.conftest import consume_n
from tests.integration.crash import start_scorer
from tests.integration.scorer_support import deployment_env, settings_from_env
from tests.waiting import await_condition

pytestmark = pytest.mark.integration


def _pack(version: str, rule: str = "DECLINE_ALL", action: str = "decline") -> str:
    return f"""
version: {version}
rules:
  - id: {rule}
    description: every payment, for the test
    when: {{field: amount, op: gt, value: 0}}
    action: {action}
    reason: {rule}
"""


def _until(source: PublishedRules, version: str, timeout_s: float = 20.0) -> None:
    """Call `maybe_reload` (as the scorer does between batches) until `version` is active."""
    await_condition(lambda: source.maybe_reload() or source.pack.version == version,
                    timeout_s, f"rule pack {version}")  # fmt: skip


def test_every_follower_switches_to_the_published_version_and_refuses_a_broken_one(
    endpoints: Endpoints,
    admin: AdminClient,
    tmp_path: Path,
    make_producer: Callable[..., Producer],
) -> None:
    env = deployment_env(endpoints, tmp_path / "registry", admin)
    settings = settings_from_env(env)
    bootstrap = endpoints.kafka_bootstrap
    publish(settings, bootstrap, _pack("v1"), pack="default", actor="test")
    publish(settings, bootstrap, _pack("other-1"), pack="other", actor="test")  # not followed
    followers = [PublishedRules(settings, bootstrap, "default") for _ in range(2)]
    try:
        for follower in followers:
            follower.start()
            assert follower.pack.version == "v1"  # what was published before it started
        # A publication that skipped validation (another tool, a bad hand edit) is refused.
        broken = RulePackEvent(pack="default", version="v-broken", text="rules: [oops",
                               actor="test", at=datetime.now(UTC))  # fmt: skip
        producer = make_producer()
        producer.produce(settings.topic_rules, encode(broken), key=b"default")
        assert producer.flush(10) == 0
        publish(settings, bootstrap, _pack("v2", action="review"), pack="default", actor="t")
        for follower in followers:
            _until(follower, "v2")
        assert all(f.last_error is None for f in followers)  # cleared by the good v2
        errors: list[str] = []
        late = PublishedRules(settings, bootstrap, "default", on_reload_error=errors.append)
        late.start()
        assert late.pack.version == "v2"  # compaction or not, the latest valid one
        assert any("not valid YAML" in e for e in errors), errors
        late.stop()
    finally:
        for follower in followers:
            follower.stop()


def test_a_scorer_decides_with_the_published_pack(
    endpoints: Endpoints,
    admin: AdminClient,
    tmp_path: Path,
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
) -> None:
    env = deployment_env(endpoints, tmp_path / "registry", admin, FRAUD_RULES_SOURCE="topic",
                         FRAUD_RULES_FILE=str(tmp_path / "absent.yaml"))  # fmt: skip
    settings = settings_from_env(env)
    log = tmp_path / "scorer.log"
    nothing = start_scorer(env, log, fault=None)  # no pack published, no file: refuses
    assert nothing.wait(60) != 0
    assert "no rule pack 'default' published yet" in log.read_text()
    publish(settings, endpoints.kafka_bootstrap, _pack("all-declined-1"), pack="default",
            actor="test")  # fmt: skip
    reader = make_consumer(settings.topic_decisions)
    scorer = start_scorer(env, log, fault=None)
    try:
        txs = simulated_history(SimulationConfig(seed=5, n_transactions=200, days=1)).transactions
        producer = make_producer()
        for tx in txs[:20]:
            producer.produce(settings.topic_transactions, encode(tx), key=tx.card_token.encode())
        assert producer.flush(10) == 0
        decisions = [orjson.loads(m.value() or b"") for m in consume_n(reader, 20, 90)]
    finally:
        scorer.terminate()
        scorer.wait(30)
    assert len(decisions) == 20, log.read_text()[-3000:]
    assert {d["action"] for d in decisions} == {"decline"}
    assert all(r["code"] == "DECLINE_ALL" for d in decisions for r in d["reasons"][:1])
