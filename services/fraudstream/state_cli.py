"""`fraudctl state`: where the scorer's Redis state stands, and rebuilding it from the log.

The scorer detects and repairs lost state by itself (`scoring.sync`); these commands do
the same by hand: `status` compares each input partition's Redis checkpoint with the
scorer group's committed offset, `rebuild` starts a new epoch per partition and folds
the input topic from its first retained offset up to that committed offset.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import click
from confluent_kafka import Consumer, TopicPartition

from fraudstream import kafka_clients
from fraudstream.features.pipeline import FeaturePipeline
from fraudstream.features.spec import FeatureSpec, catalog
from fraudstream.json_output import JSON_OPTION, echo_json
from fraudstream.localstack.stack import resolve_endpoints
from fraudstream.scoring.settings import ScorerSettings
from fraudstream.scoring.state import Checkpoint, ScorerState, redis_client
from fraudstream.scoring.sync import Fold, Progress, Replayer


@dataclass(frozen=True)
class PartitionPosition:
    """One input partition: retained range, the group's committed offset, Redis's state."""

    partition: int
    low: int
    committed: int
    checkpoint: Checkpoint | None

    @property
    def behind(self) -> int | None:
        """Committed offsets whose updates Redis lacks (None: no usable state at all)."""
        if self.checkpoint is None or not self.checkpoint.current:
            return None
        return max(self.committed - self.checkpoint.offset, 0)


def positions(
    settings: ScorerSettings, state: ScorerState, consumer: Consumer
) -> list[PartitionPosition]:
    """Every input partition's position, read from Kafka and Redis."""
    topic = settings.topic_transactions
    count = kafka_clients.partition_count(consumer, topic)
    if not count:
        raise click.ClickException(f"input topic {topic!r} not found")
    state.partitions = count
    tps = [TopicPartition(topic, p) for p in range(count)]
    committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
    checkpoints = state.checkpoints()
    found = []
    for p in range(count):
        low, _high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        found.append(PartitionPosition(p, low, max(committed[p], low), checkpoints.get(p)))
    return found


def _open(settings: ScorerSettings) -> tuple[ScorerState, Consumer, str]:
    endpoints = resolve_endpoints(settings)
    client = redis_client(endpoints.redis_url, 5000, cluster=settings.redis_cluster)
    state = ScorerState(client, prefix=f"{settings.redis_prefix}:fs",
                        topic=settings.topic_transactions)  # fmt: skip
    consumer = kafka_clients.consumer(settings, endpoints.kafka_bootstrap,
                                      settings.scorer_group_id)  # fmt: skip
    return state, consumer, endpoints.kafka_bootstrap


@click.group("state")
def state_group() -> None:
    """The scorer's feature state in Redis (see the README's State section)."""


@state_group.command("status")
@JSON_OPTION
def state_status(as_json: bool) -> None:
    """Per input partition: the group's committed offset and how far Redis is behind it."""
    settings = ScorerSettings()
    state, consumer, _bootstrap = _open(settings)
    try:
        found = positions(settings, state, consumer)
        if as_json:
            echo_json([{"partition": p.partition, "low": p.low, "committed": p.committed,
                        "redis_behind": p.behind} for p in found])  # fmt: skip
            return
        for pos in found:
            behind = pos.behind
            word = "no usable state" if behind is None else f"{behind} offsets behind"
            click.echo(f"partition {pos.partition}: committed {pos.committed}, retained from "
                       f"{pos.low}, Redis {word}")  # fmt: skip
    finally:
        consumer.close()


@state_group.command("rebuild")
@click.option("--partition", "only", type=int, multiple=True, help="Only these partitions.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def state_rebuild(only: tuple[int, ...], yes: bool) -> None:
    """Rebuild the state of every (or the given) input partition from the log.

    Best with the scorers stopped; running scorers notice the new epoch and catch up by
    themselves, serving degraded decisions for those partitions meanwhile."""
    settings = ScorerSettings()
    state, consumer, bootstrap = _open(settings)
    try:
        chosen = [p for p in positions(settings, state, consumer)
                  if not only or p.partition in only]  # fmt: skip
        total = sum(p.committed - p.low for p in chosen)
        if not yes:
            click.confirm(f"rebuild {len(chosen)} partitions ({total} offsets)?", abort=True)
        # State maths do not depend on the feature spec: the catalog's pipeline folds all.
        fold = Fold(FeaturePipeline(FeatureSpec(names=catalog())), settings.max_message_bytes)
        replayer = Replayer(lambda: kafka_clients.consumer(
            settings, bootstrap, f"{settings.scorer_group_id}-rebuild",
            {"enable.partition.eof": False},
        ), state, fold)  # fmt: skip
        started = time.monotonic()
        for pos in chosen:
            checkpoint = state.reset(pos.partition, pos.low)
            replayer.catch_up(pos.partition, checkpoint, pos.committed, on_progress=_echo)
            click.echo(f"partition {pos.partition}: rebuilt offsets {pos.low}-{pos.committed - 1}")
        replayer.close()
        elapsed = time.monotonic() - started
        click.echo(f"rebuilt {total} offsets in {elapsed:.1f} s "
                   f"({total / max(elapsed, 1e-9):.0f} offsets/s)")  # fmt: skip
    finally:
        consumer.close()


def _echo(progress: Progress) -> None:
    done = progress.at - progress.start
    elapsed = time.monotonic() - progress.started
    click.echo(f"  partition {progress.partition}: {done} folded, {progress.remaining} to go "
               f"({done / max(elapsed, 1e-9):.0f}/s)")  # fmt: skip
