"""The models a scorer serves (champion, shadow, canary) and their hot swap.

The registry is the source of truth for stages; `fraud.models` events say when to look
again. A background thread consumes that compacted topic, loads and warms the versions
the registry now names, and publishes a new immutable `ModelSet`; the batch loop picks
the current set up at the start of each batch, so a swap happens between batches, with
no restart and no lost input.
"""

from __future__ import annotations

import logging
import threading
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fraudstream import kafka_clients
from fraudstream.contracts import ModelEvent
from fraudstream.errors import FraudStreamError
from fraudstream.features.pipeline import FeaturePipeline
from fraudstream.features.spec import FeatureSpec
from fraudstream.registry import Registry, RegistryError, Stage
from fraudstream.scoring.model import ServingModel, scoring_spec
from fraudstream.settings import CommonSettings
from fraudstream.trainer import feature_spec_of

_log = logging.getLogger(__name__)
CANARY_BUCKETS = 10_000


@dataclass(frozen=True)
class ModelSet:
    """What one batch is scored with; replaced whole, never mutated."""

    champion: ServingModel | None = None
    shadow: ServingModel | None = None
    canary: ServingModel | None = None
    canary_share: float = 0.0
    pipeline: FeaturePipeline = field(default_factory=lambda: FeaturePipeline(scoring_spec(None)))

    def canary_rows(self, cards: list[str]) -> np.ndarray:
        """Rows routed to the canary: a stable hash of the card, so a card stays on one side."""
        if self.canary is None or self.canary_share <= 0:
            return np.zeros(len(cards), dtype=bool)
        limit = self.canary_share * CANARY_BUCKETS
        return np.array([zlib.crc32(c.encode()) % CANARY_BUCKETS < limit for c in cards])


def load_model_set(registry: Registry, name: str, previous: ModelSet | None = None) -> ModelSet:
    """Load the registry's current champion, shadow and canary (reusing loaded versions)."""
    try:
        versions = registry.list(name)
    except RegistryError as exc:
        _log.warning("no models: %s", exc)
        return ModelSet()
    wanted = {stage: next((v for v in versions if v.stage is stage), None)
              for stage in (Stage.CHAMPION, Stage.SHADOW, Stage.CANARY)}  # fmt: skip
    specs: list[FeatureSpec] = []
    for version in wanted.values():
        if version is not None:
            specs.append(feature_spec_of(registry.show(name, version.version).feature_spec))
    spec = _union(specs)
    loaded = {m.version: m for m in _models(previous)}
    roles: dict[Stage, ServingModel | None] = {}
    for stage, version in wanted.items():
        roles[stage] = None
        if version is None:
            continue
        reusable = loaded.get(version.version)
        if reusable is not None and reusable.columns_for(spec):
            roles[stage] = reusable
            continue
        try:
            roles[stage] = ServingModel.load(registry, name, version.version, spec)
        except FraudStreamError as exc:
            _log.error("cannot load %s %s as %s: %s", name, version.version, stage.value, exc)
    canary = wanted[Stage.CANARY]
    return ModelSet(
        champion=roles[Stage.CHAMPION], shadow=roles[Stage.SHADOW], canary=roles[Stage.CANARY],
        canary_share=(canary.canary_share or 0.0) if canary else 0.0,
        pipeline=FeaturePipeline(spec),
    )  # fmt: skip


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


class ModelWatcher:
    """Follows `fraud.models` in a thread and swaps in freshly loaded model sets."""

    def __init__(
        self,
        settings: CommonSettings,
        bootstrap: str,
        registry: Registry,
        model_name: str,
        on_swap: Callable[[ModelSet], None] = lambda _models: None,
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.registry = registry
        self.model_name = model_name
        self.on_swap = on_swap
        self.current = load_model_set(registry, model_name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def reload(self) -> ModelSet:
        """Load what the registry names now and make it current."""
        models = load_model_set(self.registry, self.model_name, self.current)
        self.current = models  # one reference assignment: batches see old or new, whole
        self.on_swap(models)
        return models

    def _run(self) -> None:
        consumer = kafka_clients.consumer(
            self.settings, self.bootstrap, f"model-watcher-{uuid.uuid4().hex[:12]}",
            {"auto.offset.reset": "latest", "enable.partition.eof": False},
        )  # fmt: skip
        consumer.subscribe([self.settings.topic_models])
        try:
            while not self._stop.is_set():
                message = consumer.poll(0.5)
                if message is None or message.error() is not None:
                    continue
                try:
                    event = ModelEvent.model_validate_json(message.value() or b"")
                except ValueError as exc:
                    _log.warning("ignoring invalid model event: %s", exc)
                    continue
                if event.model_name == self.model_name:
                    _log.info("model event %s %s: reloading", event.event.value, event.version)
                    self.reload()
        finally:
            consumer.close()
