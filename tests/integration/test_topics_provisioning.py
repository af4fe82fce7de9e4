"""Topic provisioning against the real broker is complete and idempotent."""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from fraudstream.settings import CommonSettings
from fraudstream.topics import TOPICS, provision
from tests.waiting import await_condition


def _isolated(settings: CommonSettings, prefix: str) -> CommonSettings:
    names = {spec.setting: f"{prefix}.{getattr(settings, spec.setting)}" for spec in TOPICS}
    return settings.model_copy(update={**names, "topic_partitions": 4})


def _config(admin: AdminClient, topic: str, key: str) -> str:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return str(admin.describe_configs([resource])[resource].result()[key].value)


def _await_config(admin: AdminClient, topic: str, key: str, value: str) -> None:
    """Config changes reach describe_configs through the metadata log: wait for it."""
    await_condition(lambda: _config(admin, topic, key) == value, 30, f"{topic} {key} = {value}")


def test_provision_creates_updates_and_repeats_safely(
    admin: AdminClient, settings: CommonSettings, unique: Callable[[str], str]
) -> None:
    isolated = _isolated(settings, unique("prov"))
    first = provision(admin, isolated)
    assert sorted(c.action for c in first) == ["created"] * len(TOPICS)

    # A created topic reaches the broker's metadata cache a moment after the controller
    # acknowledged it (seen under load): wait for it rather than race it.
    wanted = {isolated.topic_transactions, isolated.topic_models}
    await_condition(lambda: wanted <= set(admin.list_topics(timeout=10).topics), 30,
                    "the created topics in the metadata")  # fmt: skip
    metadata = admin.list_topics(timeout=10).topics
    assert len(metadata[isolated.topic_transactions].partitions) == 4
    assert len(metadata[isolated.topic_models].partitions) == 1
    assert _config(admin, isolated.topic_models, "cleanup.policy") == "compact"
    assert _config(admin, isolated.topic_transactions, "retention.ms") == str(7 * 86_400_000)

    second = provision(admin, isolated)
    assert {c.action for c in second} == {"unchanged"}

    # Drift in a config is repaired; a partition mismatch is reported, never "fixed".
    drifted = isolated.model_copy(update={"topic_partitions": 8})
    resource = ConfigResource(
        ResourceType.TOPIC, isolated.topic_models,
        incremental_configs=[ConfigEntry("cleanup.policy", "delete",
                                         incremental_operation=AlterConfigOpType.SET)],
    )  # fmt: skip
    admin.incremental_alter_configs([resource])[resource].result()
    _await_config(admin, isolated.topic_models, "cleanup.policy", "delete")
    third = {(c.topic, c.action) for c in provision(admin, drifted)}
    assert (isolated.topic_models, "updated") in third
    assert (isolated.topic_transactions, "warning") in third
    _await_config(admin, isolated.topic_models, "cleanup.policy", "compact")
    assert len(admin.list_topics(timeout=10).topics[isolated.topic_transactions].partitions) == 4
