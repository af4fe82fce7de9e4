"""Settings come from the environment, with conventional names for the endpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from fraudstream.settings import CommonSettings


def test_defaults_need_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "FRAUD_TOPIC_TRANSACTIONS"):
        monkeypatch.delenv(name, raising=False)
    settings = CommonSettings()
    assert settings.kafka_bootstrap_servers is None
    assert settings.topic_transactions == "transactions"
    assert settings.state_dir == Path(".fraudstream")


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.setenv("REDIS_URL", "redis://redis:6379/0")
    monkeypatch.setenv("FRAUD_TOPIC_TRANSACTIONS", "payments")
    monkeypatch.setenv("FRAUD_TOPIC_PARTITIONS", "12")
    settings = CommonSettings()
    assert settings.kafka_bootstrap_servers == "kafka:9092"
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.topic_transactions == "payments"
    assert settings.topic_partitions == 12


def test_out_of_range_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUD_TOPIC_PARTITIONS", "0")
    with pytest.raises(ValidationError, match="topic_partitions"):
        CommonSettings()


def test_sasl_password_is_secret_but_reaches_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUD_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("FRAUD_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("FRAUD_KAFKA_SASL_USERNAME", "scorer")
    monkeypatch.setenv("FRAUD_KAFKA_SASL_PASSWORD", "hunter2")
    settings = CommonSettings()
    assert "hunter2" not in repr(settings)
    config = settings.kafka_client_config("broker:9093")
    assert config["sasl.password"] == "hunter2"
    assert config["security.protocol"] == "SASL_SSL"
    assert config["bootstrap.servers"] == "broker:9093"


def test_settings_are_frozen() -> None:
    settings = CommonSettings()
    with pytest.raises(ValidationError):
        settings.topic_transactions = "other"  # type: ignore[misc]
