"""The models a scorer serves (champion, shadow, canary) and their hot swap.

The registry is the source of truth for stages; `fraud.models` events only say when to
look again. A background thread follows that compacted topic without a consumer group
(its partitions assigned at their end offsets, nothing committed), re-reads the registry
once positioned and after each event for its model, loads and warms the versions named
there and publishes a new immutable `ModelSet`; the batch loop picks the current set up
at the start of each batch, so a swap happens between batches, with no restart and no
lost input. A version that cannot be loaded is left out of the set (no champion means
rules only); a registry that cannot be read keeps the last good set. Either way the
watcher keeps running, reports the error and retries.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from fraudstream import kafka_clients
from fraudstream.contracts import ModelEvent
from fraudstream.errors import FraudStreamError, InfrastructureUnavailable
from fraudstream.features.pipeline import FeaturePipeline
from fraudstream.features.spec import FeatureSpec
from fraudstream.registry import ModelNotFoundError, ModelVersion, Registry, Stage
from fraudstream.scoring.model import ServingModel, scoring_spec, trained_spec
from fraudstream.scoring.settings import ScorerSettings

_log = logging.getLogger(__name__)
CANARY_BUCKETS = 10_000
ROLES = (Stage.CHAMPION, Stage.SHADOW, Stage.CANARY)
POLL_S = 0.5  # bounds how long stop() waits for the thread
EVENTS_PER_POLL = 100  # a burst of events costs one registry read
MAX_RETRY_S = 300.0  # failed reloads back off, doubling from `retry_s` up to this
KAFKA_ERROR_LOG_EVERY_S = 60.0
METADATA_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ModelSet:
    """What one batch is scored with; replaced whole, never mutated."""

    champion: ServingModel | None = None
    shadow: ServingModel | None = None
    canary: ServingModel | None = None
    canary_share: float = 0.0
    pipeline: FeaturePipeline = field(default_factory=lambda: FeaturePipeline(scoring_spec(None)))
    errors: tuple[str, ...] = ()  # why versions the registry names are missing from this set

    def canary_rows(self, cards: list[str]) -> np.ndarray:
        """Rows routed to the canary: a stable hash of the card, so a card stays on one side."""
        if self.canary is None or self.canary_share <= 0:
            return np.zeros(len(cards), dtype=bool)
        limit = self.canary_share * CANARY_BUCKETS
        return np.array([zlib.crc32(c.encode()) % CANARY_BUCKETS < limit for c in cards])

    def summary(self) -> tuple[object, ...]:
        """What tells two sets apart: versions per role, canary share and errors."""
        versions = (m.version if m else None for m in (self.champion, self.shadow, self.canary))
        return (*versions, self.canary_share, self.errors)


def load_model_set(registry: Registry, name: str, previous: ModelSet | None = None) -> ModelSet:
    """The registry's current champion, shadow and canary, reusing versions already loaded.

    A version that cannot be loaded (checksum mismatch, corrupt or incompatible files) is
    left out with an ERROR log and a line in `errors`. A model with no registered version
    gives an empty set; `RegistryError` when the registry itself cannot be read.
    """
    try:
        versions = registry.list(name)
    except ModelNotFoundError as exc:
        _log.warning("no models: %s", exc)
        return ModelSet()
    wanted = _staged(versions)
    errors: list[str] = []
    specs: dict[Stage, FeatureSpec] = {}
    for stage, version in wanted.items():
        try:
            specs[stage] = trained_spec(registry, name, version.version)
        except FraudStreamError as exc:
            errors.append(_left_out(version, stage, exc))
    spec = _union(list(specs.values()))
    reusable = {m.version: m for m in _models(previous) if m.columns_for(spec)}
    roles: dict[Stage, ServingModel] = {}
    for stage in specs:
        version = wanted[stage]
        try:
            roles[stage] = reusable.get(version.version) or ServingModel.load(
                registry, name, version.version, spec
            )
        except FraudStreamError as exc:
            errors.append(_left_out(version, stage, exc))
    canary = wanted.get(Stage.CANARY)
    return ModelSet(
        champion=roles.get(Stage.CHAMPION), shadow=roles.get(Stage.SHADOW),
        canary=roles.get(Stage.CANARY),
        canary_share=(canary.canary_share or 0.0) if canary else 0.0,
        pipeline=FeaturePipeline(spec), errors=tuple(errors),
    )  # fmt: skip


def single_model_set(registry: Registry, name: str, version: str) -> ModelSet:
    """A set serving one version (`champion`: the registry's current champion) to every
    row, as a backtest scores with it. Errors name what is missing; a version that cannot
    be loaded raises instead of being left out."""
    if version == Stage.CHAMPION.value:
        champion = _staged(registry.list(name)).get(Stage.CHAMPION)
        if champion is None:
            raise ModelNotFoundError(f"{name} has no champion: pass --model VERSION or none")
        version = champion.version
    spec = scoring_spec(trained_spec(registry, name, version))
    return ModelSet(champion=ServingModel.load(registry, name, version, spec),
                    pipeline=FeaturePipeline(spec))  # fmt: skip


def _staged(versions: list[ModelVersion]) -> dict[Stage, ModelVersion]:
    """The version in each serving role, champion first (its spec leads the scoring spec)."""
    staged = {}
    for stage in ROLES:
        version = next((v for v in versions if v.stage is stage), None)
        if version is not None:
            staged[stage] = version
    return staged


def _left_out(version: ModelVersion, stage: Stage, exc: Exception) -> str:
    message = f"cannot load {version.model_name} {version.version} as {stage.value}: {exc}"
    _log.error("%s; serving without it", message)
    return message


def _models(models: ModelSet | None) -> list[ServingModel]:
    if models is None:
        return []
    return [m for m in (models.champion, models.shadow, models.canary) if m is not None]


def _union(specs: list[FeatureSpec]) -> FeatureSpec:
    """The scoring spec covering every loaded model's producer features."""
    if not specs:
        return scoring_spec(None)
    merged = specs[0]
    for other in specs[1:]:
        extra = tuple(n for n in other.names if n not in merged.names)
        merged = FeatureSpec(
            names=(*merged.names, *extra),
            producer_defaults={**other.producer_defaults, **merged.producer_defaults},
        )
    return scoring_spec(merged)


def assign_at_end(consumer: Consumer, topic: str) -> list[TopicPartition]:
    """Assign every partition of `topic` at its current end offset: no group, no commits.

    The end offsets are read before returning, so every record produced from now on is
    read, whenever the fetch starts.
    """
    metadata = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        reason = "no metadata" if metadata is None else metadata.error or "no partitions"
        raise InfrastructureUnavailable(
            f"cannot follow topic {topic} ({reason}): create it with `fraudctl topics create`"
        )
    ends = []
    for partition in sorted(metadata.partitions):
        _low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=METADATA_TIMEOUT_S
        )
        ends.append(TopicPartition(topic, partition, high))
    consumer.assign(ends)
    return ends


class Throttled:
    """A warning logged at most once per `every_s`, saying how many repeats were skipped."""

    def __init__(self, every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._every_s, self._clock = every_s, clock
        self._next = -math.inf
        self.skipped = 0

    def warn(self, message: str) -> bool:
        """Log `message` unless one was logged less than `every_s` ago; True if logged."""
        now = self._clock()
        if now < self._next:
            self.skipped += 1
            return False
        repeats = f" ({self.skipped} more since the last report)" if self.skipped else ""
        _log.warning("%s%s", message, repeats)
        self._next, self.skipped = now + self._every_s, 0
        return True


def _ignore(_message: str) -> None:
    """Default `on_error`."""


class ModelWatcher:
    """Follows `fraud.models` in a thread and swaps in freshly loaded model sets.

    `healthy` is False from a failed registry read, model load or Kafka setup until the
    next clean reload (retried after `retry_s`, doubling up to MAX_RETRY_S), and once the
    thread has died; `last_error` says why. `on_swap` receives every changed set,
    `on_error` every failure message (also counted in `error_count`); both may be
    assigned after construction.
    """

    def __init__(
        self,
        settings: ScorerSettings,
        bootstrap: str,
        registry: Registry,
        model_name: str,
        on_swap: Callable[[ModelSet], None] = lambda _models: None,
        *,
        on_error: Callable[[str], None] = _ignore,
        consumer: Callable[[], Consumer] | None = None,
        retry_s: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.registry = registry
        self.model_name = model_name
        self.on_swap = on_swap
        self.on_error = on_error
        self.retry_s = retry_s
        self.current = ModelSet()
        self.last_error: str | None = None
        self.error_count = 0
        self._clock = clock
        self._retry_at, self._retry_delay = math.inf, retry_s
        self._new_consumer = consumer or self._kafka_consumer
        self._kafka_errors = Throttled(KAFKA_ERROR_LOG_EVERY_S, clock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
        self.reload()

    @property
    def healthy(self) -> bool:
        """No failure since the last clean reload, and the thread (once started) is alive."""
        started = self._thread.ident is not None
        return self.last_error is None and (not started or self._thread.is_alive())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def reload(self) -> ModelSet:
        """Load what the registry names now and make it current; a failure keeps the old set."""
        try:
            models = load_model_set(self.registry, self.model_name, self.current)
        except Exception as exc:  # whatever breaks the registry read, the watcher carries on
            self._failed(f"cannot reload models of {self.model_name}: {exc}", exc)
            return self.current
        changed = models.summary() != self.current.summary()
        if changed:
            self.current = models  # one reference assignment: batches see old or new, whole
        self.last_error = "; ".join(models.errors) or None
        self.error_count += len(models.errors)
        if models.errors:
            self._schedule_retry()
        else:
            self._retry_at, self._retry_delay = math.inf, self.retry_s
        if changed:
            self.on_swap(models)
        for message in models.errors:
            self.on_error(message)
        return self.current

    def _failed(self, message: str, exc: Exception) -> float:
        """Log, record and report a failure; returns the seconds until the retry."""
        unexpected = not isinstance(exc, FraudStreamError)
        _log.error("%s; keeping %s", message, _describe(self.current), exc_info=unexpected)
        self.last_error = message
        self.error_count += 1
        delay = self._schedule_retry()
        self.on_error(message)
        return delay

    def _schedule_retry(self) -> float:
        delay = self._retry_delay
        self._retry_at = self._clock() + delay
        self._retry_delay = min(delay * 2, max(MAX_RETRY_S, self.retry_s))
        return delay

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except Exception as exc:  # Kafka set-up or poll failed: back off, start again
                self._stop.wait(
                    self._failed(f"cannot follow {self.settings.topic_models}: {exc}", exc)
                )

    def _follow(self) -> None:
        consumer = self._new_consumer()
        try:
            assign_at_end(consumer, self.settings.topic_models)
            # Read after positioning: a change made from here on comes with an event we read.
            self.reload()
            while not self._stop.is_set():
                messages = consumer.consume(EVENTS_PER_POLL, POLL_S)
                if self._wants_reload(messages) or self._clock() >= self._retry_at:
                    self.reload()
        finally:
            consumer.close()

    def _wants_reload(self, messages: Sequence[Message]) -> bool:
        """True if a message concerns our model; errors and invalid events are logged."""
        wanted = False
        for message in messages:
            error, value = message.error(), message.value()
            if error is not None:
                self._on_kafka_error(error)
            elif value is None:  # a tombstone: only its key names the model
                wanted |= message.key() == self.model_name.encode()
            else:
                wanted |= self._is_ours(value, message.offset())
        return wanted

    def _is_ours(self, value: bytes, offset: int | None) -> bool:
        try:
            event = ModelEvent.model_validate_json(value)
        except ValueError as exc:
            _log.warning("ignoring invalid model event at offset %s: %s", offset, exc)
            return False
        if event.model_name != self.model_name:
            return False
        _log.info("model event %s %s: reloading", event.event.value, event.version)
        return True

    def _on_kafka_error(self, error: KafkaError) -> None:
        self._kafka_errors.warn(f"model events ({self.settings.topic_models}): {error}")

    def _kafka_consumer(self) -> Consumer:
        return kafka_clients.consumer(
            self.settings, self.bootstrap, f"{self.settings.scorer_group_id}-models",
            {"enable.partition.eof": False, "error_cb": self._on_kafka_error},
        )  # fmt: skip


def _describe(models: ModelSet) -> str:
    champion = models.champion.version if models.champion else "none"
    return f"the current models (champion {champion})"
