"""Settings come from the environment, with conventional names for the endpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from fraudstream.localstack.stack import Endpoints
from fraudstream.settings import CommonSettings, mask_url


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


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:secret@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:secret@host", "redis://user:***@host"),
        ("rediss://user:p%40ss@host:6380/1?ssl_cert_reqs=none",
         "rediss://user:***@host:6380/1?ssl_cert_reqs=none"),
        ("redis://:p@ss@host/0", "redis://:***@host/0"),  # unescaped "@" in the password
        ("redis://:pa/ss@host:6379", "redis://***@host:6379"),  # unescaped "/": all masked
        ("redis://host/0?password=secret&db=1", "redis://host/0?password=***&db=1"),
        ("redis://:secret@[::1]:6379", "redis://:***@[::1]:6379"),
        ("redis://user@host:6379/0", "redis://user@host:6379/0"),  # no password
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("PLAINTEXT", "PLAINTEXT"),
    ],
)  # fmt: skip
def test_mask_url_hides_only_the_password(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_redis_password_is_masked_in_repr_and_str(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://scorer:hunter2@redis:6379/0")
    settings = CommonSettings()
    assert settings.redis_url == "redis://scorer:hunter2@redis:6379/0"  # clients get it whole
    for shown in (repr(settings), str(settings)):
        assert "hunter2" not in shown
        assert "redis_url='redis://scorer:***@redis:6379/0'" in shown
    assert "hunter2" not in repr(Endpoints("kafka:9092", settings.redis_url))
