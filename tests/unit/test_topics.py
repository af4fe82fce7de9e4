"""The topic declaration matches the design brief."""

from __future__ import annotations

from fraudstream.contracts import CONTRACTS, ModelEvent, RulePackEvent
from fraudstream.settings import CommonSettings
from fraudstream.topics import TOPICS, topic_table


def test_every_contract_has_a_topic_and_names_are_unique() -> None:
    settings = CommonSettings()
    names = [spec.name(settings) for spec in TOPICS]
    assert len(set(names)) == len(names) == 8
    assert {spec.contract for spec in TOPICS} == set(CONTRACTS)
    assert set(names) == {
        "transactions", "transactions.dlq", "fraud.decisions", "fraud.review",
        "fraud.labels", "fraud.retrain", "fraud.models", "fraud.rules",
    }  # fmt: skip


def test_only_model_events_and_rule_packs_are_compacted_and_kept_forever() -> None:
    compacted = [spec for spec in TOPICS if spec.cleanup_policy == "compact"]
    assert [spec.contract for spec in compacted] == [ModelEvent, RulePackEvent]
    for spec in compacted:
        assert spec.configs() == {"cleanup.policy": "compact", "retention.ms": "-1"}


def test_card_keyed_topics_follow_the_partition_setting() -> None:
    settings = CommonSettings(topic_partitions=12)
    by_name = {spec.name(settings): spec.partition_count(settings) for spec in TOPICS}
    assert by_name["transactions"] == by_name["fraud.decisions"] == 12
    assert by_name["fraud.models"] == 1


def test_topic_table_lists_every_topic() -> None:
    lines: list[str] = []
    topic_table(CommonSettings(), emit=lines.append)
    assert len(lines) == 2 + len(TOPICS)
    assert "| `fraud.rules` | pack | 1 | forever | compact | RulePackEvent |" in lines[-1]
