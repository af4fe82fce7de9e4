"""Client factories: base settings, and FRAUD_KAFKA_CLIENT_OVERRIDES merged last."""

from __future__ import annotations

import pytest

from fraudstream import kafka_clients
from fraudstream.errors import ConfigurationError
from fraudstream.kafka_clients import OVERRIDES_ENV, env_overrides
from fraudstream.settings import CommonSettings


def test_no_variable_means_no_overrides() -> None:
    assert env_overrides("producer", {}) == {}
    assert env_overrides("consumer", {OVERRIDES_ENV: "  "}) == {}


def test_all_applies_to_every_kind_and_the_kind_section_wins() -> None:
    environ = {OVERRIDES_ENV: '{"all": {"reconnect.backoff.max.ms": 10000, "debug": "cgrp"},'
                              ' "consumer": {"reconnect.backoff.max.ms": 500},'
                              ' "producer": {"linger.ms": 0}}'}  # fmt: skip
    assert env_overrides("consumer", environ) == {
        "reconnect.backoff.max.ms": 500, "debug": "cgrp"
    }  # fmt: skip
    assert env_overrides("producer", environ) == {
        "reconnect.backoff.max.ms": 10000, "debug": "cgrp", "linger.ms": 0
    }  # fmt: skip
    assert env_overrides("admin", environ) == {"reconnect.backoff.max.ms": 10000, "debug": "cgrp"}


@pytest.mark.parametrize(
    "raw",
    ['{"consumer": ', '["consumer"]', '{"consumers": {}}', '{"consumer": 5}',
     '{"all": {"a": {"nested": 1}}}', '{"producer": {"a": null}}'],
)  # fmt: skip
def test_malformed_overrides_are_a_configuration_error(raw: str) -> None:
    with pytest.raises(ConfigurationError, match=OVERRIDES_ENV):
        env_overrides("consumer", {OVERRIDES_ENV: raw})


def test_overrides_beat_base_config_and_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, object]] = []
    monkeypatch.setattr(kafka_clients, "Consumer", seen.append)
    monkeypatch.setattr(kafka_clients, "Producer", seen.append)
    monkeypatch.setenv(OVERRIDES_ENV, '{"all": {"reconnect.backoff.max.ms": 10000},'
                                      ' "consumer": {"session.timeout.ms": 45000}}')  # fmt: skip
    settings = CommonSettings()
    kafka_clients.consumer(settings, "b:9092", "g", {"session.timeout.ms": 10_000})
    kafka_clients.producer(settings, "b:9092", {"reconnect.backoff.max.ms": 1})
    consumer, producer = seen
    assert consumer["session.timeout.ms"] == 45000
    assert consumer["reconnect.backoff.max.ms"] == producer["reconnect.backoff.max.ms"] == 10000
    assert consumer["group.id"] == "g"
    assert consumer["isolation.level"] == "read_committed"
    assert "session.timeout.ms" not in producer


def test_logged_overrides_mask_credentials(caplog: pytest.LogCaptureFixture) -> None:
    environ = {OVERRIDES_ENV: '{"all": {"sasl.password": "hunter2", "ssl.key.password": "k",'
                              ' "linger.ms": 3}}'}  # fmt: skip
    with caplog.at_level("INFO", logger="fraudstream.kafka"):
        assert env_overrides("producer", environ)["sasl.password"] == "hunter2"
    assert "hunter2" not in caplog.text
    assert "'k'" not in caplog.text
    assert "'linger.ms': 3" in caplog.text


def test_producer_requests_are_bounded_at_ten_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, object]] = []
    monkeypatch.setattr(kafka_clients, "Producer", seen.append)
    monkeypatch.delenv(OVERRIDES_ENV, raising=False)
    kafka_clients.producer(CommonSettings(), "b:9092", {"transactional.id": "t"})
    assert seen[0]["socket.timeout.ms"] == 10_000  # send_offsets_to_transaction's real bound
    assert seen[0]["enable.idempotence"] is True
