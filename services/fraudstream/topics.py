"""Every topic of the design, declared once, and their idempotent provisioning."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from fraudstream.contracts import (
    Contract,
    DeadLetter,
    Decision,
    Label,
    ModelEvent,
    RetrainTrigger,
    ReviewCase,
    RulePackEvent,
    Transaction,
)
from fraudstream.errors import InfrastructureUnavailable
from fraudstream.settings import CommonSettings

DAY_MS = 24 * 3600 * 1000
KEYED = -1  # partitions: use settings.topic_partitions (topics keyed by card)


@dataclass(frozen=True)
class TopicSpec:
    """One topic: where its name is configured, its layout, and what it carries."""

    setting: str
    partitions: int
    retention_ms: int
    cleanup_policy: Literal["delete", "compact"]
    key: str
    contract: type[Contract]
    purpose: str

    def name(self, settings: CommonSettings) -> str:
        return str(getattr(settings, self.setting))

    def partition_count(self, settings: CommonSettings) -> int:
        return settings.topic_partitions if self.partitions == KEYED else self.partitions

    def configs(self) -> dict[str, str]:
        return {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("topic_transactions", KEYED, 7 * DAY_MS, "delete", "card_token", Transaction,
              "input; 7 days so feature state can be rebuilt by replay"),
    TopicSpec("topic_dlq", 3, 30 * DAY_MS, "delete", "original key", DeadLetter,
              "bad input with the reason and the original bytes"),
    TopicSpec("topic_decisions", KEYED, 7 * DAY_MS, "delete", "card_token", Decision,
              "one decision per accepted transaction"),
    TopicSpec("topic_review", 3, 14 * DAY_MS, "delete", "transaction_id", ReviewCase,
              "low-confidence cases for reviewers"),
    TopicSpec("topic_labels", 3, 365 * DAY_MS, "delete", "transaction_id", Label,
              "verdicts and chargebacks; a year of training history"),
    TopicSpec("topic_retrain", 1, 30 * DAY_MS, "delete", "model_name", RetrainTrigger,
              "drift monitor's retraining triggers"),
    TopicSpec("topic_models", 1, -1, "compact", "model_name", ModelEvent,
              "model lifecycle; compacted, so the latest state per model is kept"),
    TopicSpec("topic_rules", 1, -1, "compact", "pack", RulePackEvent,
              "published rule packs; compacted, so the latest version per pack is kept"),
)  # fmt: skip


@dataclass(frozen=True)
class TopicChange:
    topic: str
    action: Literal["created", "updated", "unchanged", "warning"]
    detail: str = ""


def provision(
    admin: AdminClient, settings: CommonSettings, timeout_s: float = 30.0
) -> list[TopicChange]:
    """Create missing topics and bring configs of existing ones in line; safe to repeat.

    Partition counts are never changed on existing topics (that would move cards to other
    partitions and break per-card ordering); a mismatch is reported as a warning.
    """
    try:
        existing = admin.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise InfrastructureUnavailable(f"cannot list Kafka topics: {exc}") from exc
    changes: list[TopicChange] = []
    missing = [spec for spec in TOPICS if spec.name(settings) not in existing]
    if missing:
        changes += _create(admin, settings, missing, timeout_s)
    for spec in TOPICS:
        name = spec.name(settings)
        if name in existing:
            changes += _reconcile(admin, spec, name, len(existing[name].partitions), settings)
    return changes


def _create(
    admin: AdminClient, settings: CommonSettings, specs: list[TopicSpec], timeout_s: float
) -> list[TopicChange]:
    new_topics = [
        NewTopic(
            spec.name(settings),
            num_partitions=spec.partition_count(settings),
            replication_factor=settings.topic_replication_factor,
            config=spec.configs(),
        )
        for spec in specs
    ]
    changes = []
    for name, future in admin.create_topics(new_topics, request_timeout=timeout_s).items():
        try:
            future.result()
            changes.append(TopicChange(name, "created"))
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":  # a concurrent provisioner won
                raise InfrastructureUnavailable(f"cannot create topic {name}: {exc}") from exc
            changes.append(TopicChange(name, "unchanged", "created concurrently"))
    return changes


def _reconcile(
    admin: AdminClient, spec: TopicSpec, name: str, partitions: int, settings: CommonSettings
) -> list[TopicChange]:
    changes = []
    wanted = spec.partition_count(settings)
    if partitions != wanted:
        changes.append(
            TopicChange(name, "warning", f"has {partitions} partitions, declared {wanted}")
        )
    resource = ConfigResource(ResourceType.TOPIC, name)
    current = admin.describe_configs([resource])[resource].result()
    differing = {
        key: value
        for key, value in spec.configs().items()
        if key not in current or current[key].value != value
    }
    if not differing:
        return [*changes, TopicChange(name, "unchanged")]
    update = ConfigResource(
        ResourceType.TOPIC,
        name,
        incremental_configs=[
            ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
            for key, value in differing.items()
        ],
    )
    admin.incremental_alter_configs([update])[update].result()
    detail = ", ".join(f"{key}={value}" for key, value in sorted(differing.items()))
    return [*changes, TopicChange(name, "updated", detail)]


def topic_rows(settings: CommonSettings) -> list[dict[str, object]]:
    """The declared topics with their settings (`fraudctl topics list --json`)."""
    return [
        {
            "topic": spec.name(settings), "key": spec.key,
            "partitions": spec.partition_count(settings), "keyed": spec.partitions == KEYED,
            "retention_ms": spec.retention_ms, "cleanup_policy": spec.cleanup_policy,
            "contract": spec.contract.__name__, "purpose": spec.purpose,
        }
        for spec in TOPICS
    ]  # fmt: skip


def topic_table(settings: CommonSettings, emit: Callable[[str], None] = print) -> None:
    """Print the declared topics as a markdown table (the README's topic table)."""
    emit("| topic | key | partitions | retention | cleanup | contract | purpose |")
    emit("|---|---|---|---|---|---|---|")
    for row in topic_rows(settings):
        retention_ms = int(str(row["retention_ms"]))
        retention = "forever" if retention_ms < 0 else f"{retention_ms // DAY_MS} d"
        partitions = (
            f"{row['partitions']} (`FRAUD_TOPIC_PARTITIONS`)"
            if row["keyed"]
            else str(row["partitions"])
        )
        emit(
            f"| `{row['topic']}` | {row['key']} | {partitions} | {retention} | "
            f"{row['cleanup_policy']} | {row['contract']} | {row['purpose']} |"
        )
