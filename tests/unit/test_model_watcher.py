"""Model set loading and the watcher: corrupt versions degrade, the watcher survives errors.

A fake consumer stands in for Kafka (the integration tests prove the binding); the
registry is real, built the way tests/unit/test_registry.py builds it, with feature names
from the catalog so the scorer can serve the versions.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from fraudstream.contracts import ModelEvent, ModelEventType, encode
from fraudstream.features.spec import FeatureSpec, catalog
from fraudstream.model.train_config import LightGBMParams, TrainConfig
from fraudstream.registry import Registry, Stage
from fraudstream.registry.files import sha256_file
from fraudstream.registry.layout import MANIFEST_FILE, Manifest
from fraudstream.scoring.models import ModelWatcher, Throttled, assign_at_end, load_model_set
from fraudstream.scoring.settings import ScorerSettings
from fraudstream.training.data import TrainingData
from fraudstream.training.publish import register
from fraudstream.training.synthetic import synthetic_training_data
from fraudstream.training.train import train
from tests.factories import NOW
from tests.waiting import await_condition

NAME = "fraud"
TOPIC = "fraud.models"
SMALL = TrainConfig(
    seed=1,
    lightgbm=LightGBMParams(
        num_leaves=15, num_boost_round=60, early_stopping_rounds=15, min_child_samples=20
    ),
    parity_rows=300,
)


def _servable(seed: int) -> TrainingData:
    """Synthetic data whose columns are catalog features, as a pipeline-trained model has."""
    data = synthetic_training_data(15_000, n_features=10, seed=seed)
    names = list(catalog()[:10])
    spec = FeatureSpec(names=tuple(names))
    doc = data.feature_spec.model_copy(
        update={"names": names, "source": {"feature_spec": spec.model_dump(mode="json")}}
    )
    return dataclasses.replace(data, feature_spec=doc)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A registry with a champion v1 and a candidate v2 (copied per test)."""
    root = tmp_path_factory.mktemp("registry")
    registry = Registry(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRAUD_GIT_COMMIT", "test-commit")
        v1 = register(registry, NAME, train(_servable(9), SMALL)).version
        v2 = register(registry, NAME, train(_servable(10), SMALL)).version
    registry.set_stage(NAME, v1, Stage.CHAMPION, actor="test")
    return root, v1, v2


@pytest.fixture
def versions(template: tuple[Path, str, str], tmp_path: Path) -> tuple[Registry, str, str]:
    root, v1, v2 = template
    shutil.copytree(root, tmp_path / "models")
    return Registry(tmp_path / "models"), v1, v2


def _corrupt(registry: Registry, version: str, file: str, *, reseal: bool = False) -> None:
    """Damage one file; `reseal` also rewrites the manifest so the checksum passes."""
    path = registry.get(NAME, version).path
    target = path / file
    target.chmod(0o644)
    target.write_bytes(b"not a model\n")
    if reseal:
        manifest = Manifest.model_validate_json((path / MANIFEST_FILE).read_bytes())
        files = {**manifest.files, file: sha256_file(target)}
        (path / MANIFEST_FILE).chmod(0o644)
        (path / MANIFEST_FILE).write_text(
            manifest.model_copy(update={"files": files}).model_dump_json()
        )


# ---- load_model_set ----


def test_loads_the_champion(versions: tuple[Registry, str, str]) -> None:
    registry, v1, _ = versions
    models = load_model_set(registry, NAME)
    assert models.champion is not None
    assert models.champion.version == v1
    assert models.errors == ()


@pytest.mark.parametrize("file", ["lightgbm.onnx", "lightgbm.txt", "ensemble.json"])
def test_a_corrupt_champion_gives_rules_only_not_an_exception(
    versions: tuple[Registry, str, str], file: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry, v1, _ = versions
    _corrupt(registry, v1, file)
    with caplog.at_level(logging.ERROR):
        models = load_model_set(registry, NAME)
    assert models.champion is None
    (error,) = models.errors
    assert f"cannot load {NAME} {v1} as champion" in error
    assert f"{file} missing or not matching the SHA-256" in error
    assert any(r.levelno == logging.ERROR and file in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("file", ["lightgbm.onnx", "lightgbm.txt"])
def test_a_corrupt_file_with_a_matching_checksum_still_degrades(
    versions: tuple[Registry, str, str], file: str
) -> None:
    registry, v1, _ = versions
    _corrupt(registry, v1, file, reseal=True)  # ONNX Runtime / LightGBM themselves refuse it
    models = load_model_set(registry, NAME)
    assert models.champion is None
    (error,) = models.errors
    assert f"cannot load {NAME} {v1} as champion" in error


def test_a_corrupt_shadow_leaves_the_champion_serving(
    versions: tuple[Registry, str, str],
) -> None:
    registry, v1, v2 = versions
    registry.set_stage(NAME, v2, Stage.SHADOW, actor="test")
    _corrupt(registry, v2, "logreg.onnx")
    models = load_model_set(registry, NAME)
    assert models.champion is not None
    assert models.champion.version == v1
    assert models.shadow is None
    assert "as shadow" in models.errors[0]


def test_nothing_registered_is_an_empty_set_without_errors(tmp_path: Path) -> None:
    models = load_model_set(Registry(tmp_path / "empty"), NAME)
    assert models.champion is None
    assert models.errors == ()


# ---- ModelWatcher, no thread ----


def _watcher(registry: Registry, **kwargs: Any) -> ModelWatcher:
    return ModelWatcher(ScorerSettings(), "unused:9092", registry, NAME, **kwargs)


def test_startup_with_a_corrupt_champion_is_rules_only_and_unhealthy(
    versions: tuple[Registry, str, str],
) -> None:
    registry, v1, _ = versions
    _corrupt(registry, v1, "lightgbm.onnx")
    errors: list[str] = []
    watcher = _watcher(registry, on_error=errors.append)
    assert watcher.current.champion is None
    assert not watcher.healthy
    assert watcher.last_error is not None
    assert "lightgbm.onnx" in watcher.last_error
    assert errors == [watcher.last_error]
    assert watcher.error_count == 1


def test_hot_swap_to_a_corrupt_version_degrades_then_recovers(
    versions: tuple[Registry, str, str],
) -> None:
    registry, v1, v2 = versions
    swaps: list[object] = []
    errors: list[str] = []
    watcher = _watcher(registry, on_error=errors.append)
    watcher.on_swap = lambda models: swaps.append(models.summary())
    assert watcher.healthy
    _corrupt(registry, v2, "lightgbm.onnx")
    registry.set_stage(NAME, v2, Stage.CHAMPION, actor="test")
    degraded = watcher.reload()
    assert degraded.champion is None  # the registry's champion cannot serve: rules only
    assert not watcher.healthy
    assert errors
    assert v2 in errors[0]
    registry.rollback(NAME, actor="test")
    back = watcher.reload()
    assert back.champion is not None
    assert back.champion.version == v1
    assert watcher.healthy
    assert watcher.last_error is None
    assert len(swaps) == 2
    watcher.reload()  # nothing changed: no swap reported
    assert len(swaps) == 2


def test_an_unreadable_registry_keeps_the_last_good_set(
    versions: tuple[Registry, str, str], caplog: pytest.LogCaptureFixture
) -> None:
    registry, v1, _ = versions
    errors: list[str] = []
    watcher = _watcher(registry, on_error=errors.append)
    good = watcher.current
    (registry.root / NAME / "stages.json").write_text("{broken")
    with caplog.at_level(logging.ERROR):
        assert watcher.reload() is good
    assert watcher.current is good
    assert good.champion is not None
    assert good.champion.version == v1
    assert not watcher.healthy
    assert errors == [watcher.last_error]
    assert f"cannot reload models of {NAME}" in errors[0]
    assert "stages.json" in errors[0]
    assert any(NAME in r.getMessage() and "stages.json" in r.getMessage() for r in caplog.records)


# ---- ModelWatcher's thread, on a fake consumer ----


@dataclasses.dataclass
class FakeMessage:
    payload: bytes | None
    key_bytes: bytes | None = NAME.encode()
    err: KafkaError | None = None

    def error(self) -> KafkaError | None:
        return self.err

    def value(self) -> bytes | None:
        return self.payload

    def key(self) -> bytes | None:
        return self.key_bytes

    def offset(self) -> int:
        return 0


class FakeConsumer:
    """The calls ModelWatcher makes, recorded; `batches` are what successive consumes return."""

    def __init__(
        self,
        batches: list[list[FakeMessage]] | None = None,
        end: int = 7,
        before_end: Callable[[], object] = lambda: None,
        fail: Exception | None = None,
    ) -> None:
        self.batches = list(batches or [])
        self.end, self.before_end, self.fail = end, before_end, fail
        self.assigned: list[tuple[str, int, int]] = []
        self.closed = False

    def list_topics(self, topic: str, timeout: float) -> Any:
        if self.fail is not None:
            raise self.fail
        partition = SimpleNamespace(id=0)
        return SimpleNamespace(
            topics={topic: SimpleNamespace(error=None, partitions={0: partition})}
        )

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        self.before_end()  # e.g. a promotion lands while the watcher starts
        return 0, self.end

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = [(p.topic, p.partition, p.offset) for p in partitions]

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        if self.batches:
            return self.batches.pop(0)
        time.sleep(0.01)
        return []

    def close(self) -> None:
        self.closed = True


def _event(version: str, model_name: str = NAME) -> FakeMessage:
    event = ModelEvent(
        model_name=model_name, version=version, event=ModelEventType.PROMOTED, actor="t", at=NOW
    )
    return FakeMessage(encode(event), model_name.encode())


@pytest.fixture
def running() -> Iterator[list[ModelWatcher]]:
    started: list[ModelWatcher] = []
    yield started
    for watcher in started:
        watcher.stop()


def _start(watcher: ModelWatcher, running: list[ModelWatcher]) -> ModelWatcher:
    running.append(watcher)
    watcher.start()
    return watcher


def test_assign_at_end_uses_the_end_offsets_read_before_returning() -> None:
    consumer = FakeConsumer(end=42)
    assigned = assign_at_end(cast(Consumer, consumer), TOPIC)
    assert consumer.assigned == [(TOPIC, 0, 42)]
    assert [(p.partition, p.offset) for p in assigned] == [(0, 42)]


def test_a_promotion_during_startup_is_not_missed(
    versions: tuple[Registry, str, str], running: list[ModelWatcher]
) -> None:
    registry, _, v2 = versions
    # Promoted after the initial load, its event before the offset the consumer starts at:
    # only the registry read made after positioning can see it.
    consumer = FakeConsumer(
        before_end=lambda: registry.set_stage(NAME, v2, Stage.CHAMPION, actor="test")
    )
    watcher = _watcher(registry, consumer=lambda: cast(Consumer, consumer))
    assert watcher.current.champion is not None
    assert watcher.current.champion.version != v2
    _start(watcher, running)
    await_condition(
        lambda: watcher.current.champion is not None and watcher.current.champion.version == v2
    )
    assert consumer.assigned == [(TOPIC, 0, 7)]
    assert watcher.healthy


def test_events_for_the_model_trigger_a_reload_others_do_not(
    versions: tuple[Registry, str, str], running: list[ModelWatcher]
) -> None:
    registry, v1, v2 = versions
    reloads = threading.Semaphore(0)
    consumer = FakeConsumer()
    watcher = _watcher(registry, consumer=lambda: cast(Consumer, consumer))
    original = watcher.reload

    def counted() -> Any:
        try:
            return original()
        finally:
            reloads.release()

    watcher.reload = counted  # type: ignore[method-assign]
    _start(watcher, running)
    assert reloads.acquire(timeout=20)  # the read after positioning
    registry.set_stage(NAME, v2, Stage.CHAMPION, actor="test")
    consumer.batches.append([_event(v2, "other-model"), FakeMessage(b"{not json")])
    consumer.batches.append([_event(v2), _event(v2)])  # one read for the burst
    assert reloads.acquire(timeout=20)
    assert not reloads.acquire(timeout=0.3)
    assert watcher.current.champion is not None
    assert watcher.current.champion.version == v2
    assert v1 != v2


def test_consumer_errors_are_logged_and_the_thread_survives_kafka_failures(
    versions: tuple[Registry, str, str],
    running: list[ModelWatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry, _, _ = versions
    errors: list[str] = []
    broken = FakeConsumer(fail=RuntimeError("broker unreachable"))
    fine = FakeConsumer(batches=[[FakeMessage(None, err=KafkaError(KafkaError._TRANSPORT))]])
    consumers = iter([broken, fine])
    watcher = _watcher(
        registry,
        consumer=lambda: cast(Consumer, next(consumers)),
        on_error=errors.append,
        retry_s=0.05,
    )
    with caplog.at_level(logging.WARNING):
        _start(watcher, running)
        await_condition(lambda: fine.assigned != [] and not fine.batches)
        await_condition(lambda: watcher.healthy)
    assert broken.closed
    assert errors == [f"cannot follow {TOPIC}: broker unreachable"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("cannot follow" in m and "broker unreachable" in m for m in messages)
    assert any(m.startswith(f"model events ({TOPIC}):") for m in messages)
    assert watcher.current.champion is not None


def test_a_failed_reload_is_retried_without_an_event(
    versions: tuple[Registry, str, str], running: list[ModelWatcher]
) -> None:
    registry, v1, _ = versions
    stages = registry.root / NAME / "stages.json"
    good = stages.read_bytes()
    stages.write_text("{broken")
    consumer = FakeConsumer()
    watcher = _watcher(registry, consumer=lambda: cast(Consumer, consumer), retry_s=0.05)
    assert not watcher.healthy  # startup: no registry, no models, an error
    assert watcher.current.champion is None
    _start(watcher, running)
    stages.write_bytes(good)
    await_condition(lambda: watcher.healthy)
    assert watcher.current.champion is not None
    assert watcher.current.champion.version == v1


def test_throttled_logs_once_per_interval_and_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    throttled = Throttled(60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        assert throttled.warn("down")
        assert not throttled.warn("down")
        assert not throttled.warn("down")
        now[0] = 61.0
        assert throttled.warn("down")
    assert [r.getMessage() for r in caplog.records] == [
        "down",
        "down (2 more since the last report)",
    ]
