"""Prometheus and Alertmanager from Debian's packages on free loopback ports, fed our own
rules and routing with timings shortened for a test, and a webhook receiver that records
what Alertmanager sends."""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from fraudstream.localstack import processes

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "rules" / "fraudstream.yml"
ALERTMANAGER = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
MAX_BODY = 1 << 20


def binary(*names: str, package: str) -> str:
    """The first of `names` on PATH; fail (not skip) with the package to install."""
    for name in names:
        if path := shutil.which(name):
            return path
    pytest.fail(f"none of {names} found: apt-get install {package} (.ci/run does)")


@dataclass
class Webhook:
    """Alertmanager's webhook payloads, as received."""

    payloads: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def alerts(self, alertname: str, status: str) -> list[tuple[str, dict[str, Any]]]:
        """(receiver, alert) for every received alert of that name and status."""
        with self.lock:
            return [
                (p["receiver"], a) for p in self.payloads for a in p["alerts"]
                if a["labels"].get("alertname") == alertname and a["status"] == status
            ]  # fmt: skip


@contextmanager
def webhook_receiver() -> Iterator[tuple[str, Webhook]]:
    """An HTTP server on 127.0.0.1 recording POSTed JSON; yields (url, recorder)."""
    hook = Webhook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            if not 0 < length <= MAX_BODY:
                self.send_response(413)
                self.end_headers()
                return
            payload = json.loads(self.rfile.read(length))
            with hook.lock:
                hook.payloads.append(payload)
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="webhook", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def rules_with_for(for_seconds: int) -> str:
    """Our alert rules with every `for:` cut to `for_seconds` (the expressions unchanged)."""
    return re.sub(r"(?m)^(\s+for: ).*$", rf"\g<1>{for_seconds}s", RULES.read_text())


def alertmanager_config(webhook_url: str) -> str:
    """Our routing, with the webhook added to every receiver and the timers in seconds."""
    config = yaml.safe_load(ALERTMANAGER.read_text())
    for receiver in config["receivers"]:
        receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": True}]
    for route in [config["route"], *config["route"].get("routes", [])]:
        route.update(group_wait="1s", group_interval="1s")
    return yaml.safe_dump(config)


@dataclass
class Monitoring:
    """A running Prometheus and Alertmanager."""

    prometheus_pid: int
    prometheus_port: int
    alertmanager_pid: int
    alertmanager_port: int

    def stop(self) -> None:
        processes.stop(self.prometheus_pid, "prometheus")
        processes.stop(self.alertmanager_pid, "alertmanager")


@contextmanager
def monitoring(home: Path, scrape: dict[str, str], webhook_url: str, for_seconds: int = 3
               ) -> Iterator[Monitoring]:  # fmt: skip
    """Prometheus scraping `scrape` (host:port -> service label) every second with our
    rules (`for:` shortened), alerting through Alertmanager with our routing."""
    prometheus = binary("prometheus", package="prometheus")
    alertmanager = binary("prometheus-alertmanager", "alertmanager",
                          package="prometheus-alertmanager")  # fmt: skip
    home.mkdir(parents=True, exist_ok=True)
    am_port, prom_port = processes.free_port(), processes.free_port()
    (home / "alertmanager.yml").write_text(alertmanager_config(webhook_url))
    (home / "rules.yml").write_text(rules_with_for(for_seconds))
    (home / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                   "scrape_timeout": "900ms"},
        "rule_files": [str(home / "rules.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [
            {"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": [{"job_name": "fraudstream", "static_configs": [
            {"targets": [target], "labels": {"service": service}}
            for target, service in scrape.items()]}],
    }))  # fmt: skip
    am_pid = processes.start_daemon([
        alertmanager, f"--config.file={home / 'alertmanager.yml'}",
        f"--storage.path={home / 'am-data'}", f"--web.listen-address=127.0.0.1:{am_port}",
        "--cluster.listen-address=",
    ], home / "alertmanager.log")  # fmt: skip
    prom_pid = processes.start_daemon([
        prometheus, f"--config.file={home / 'prometheus.yml'}",
        f"--storage.tsdb.path={home / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}",
    ], home / "prometheus.log")  # fmt: skip
    running = Monitoring(prom_pid, prom_port, am_pid, am_port)
    try:
        for port, pid, log in ((am_port, am_pid, "alertmanager.log"),
                               (prom_port, prom_pid, "prometheus.log")):  # fmt: skip
            _await_listening(port, pid, home / log)
        yield running
    finally:
        running.stop()


def _await_listening(port: int, pid: int, log: Path) -> None:
    up = processes.wait_until(lambda: processes.port_open(port) or not processes.is_alive(pid), 30)
    assert processes.is_alive(pid), processes.tail(log)
    assert up, processes.tail(log)
