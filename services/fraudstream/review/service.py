"""The review service process (`fraud-review`): intake of `fraud.review`, the label relay
to `fraud.labels`, the console and its API, and `/metrics` with health probes.

Threads: intake (poll, store, commit), relay (outbox to the topic, then the gauges), and
the console's uvicorn server; the main thread waits for SIGTERM/SIGINT and stops them.
A failure in intake or the relay is logged and retried with backoff; readiness reports it.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
from prometheus_client import CollectorRegistry

from fraudstream import kafka_clients
from fraudstream.errors import FraudStreamError
from fraudstream.localstack.stack import resolve_endpoints
from fraudstream.observability.http import HealthServer, HealthState
from fraudstream.observability.http import serve as serve_http
from fraudstream.observability.process import run_service, stop_on_signals
from fraudstream.review import timeline
from fraudstream.review.database import open_engine
from fraudstream.review.intake import OFFSETS_BY_HAND, Intake
from fraudstream.review.metrics import ReviewMetrics
from fraudstream.review.outbox import LabelRelay
from fraudstream.review.settings import ReviewSettings
from fraudstream.review.store import CaseStore, Rules
from fraudstream.review.web.app import Console, create_app
from fraudstream.rules.engine import RulePack
from fraudstream.rules.lists import RedisLists
from fraudstream.rules.model import ListEntity, ListName
from fraudstream.scoring.state import redis_client

_log = logging.getLogger(__name__)
BACKOFF_MAX_S = 30.0
METRICS_REFRESH_S = 5.0  # the gauges' aggregate queries, at most this often


def rule_descriptions(path: Path) -> dict[str, str]:
    """Reason code -> the rule's description, from the rule pack (empty when unreadable)."""
    try:
        pack = RulePack.from_yaml(path.read_text(), str(path))
    except (OSError, FraudStreamError, ValueError) as exc:
        _log.warning("rule descriptions unavailable (%s): the case page shows codes", exc)
        return {}
    return {rule.reason: rule.description for rule in pack.rules}


@dataclass
class Worker:
    """A loop in a thread: `step` until stopped, failures logged and retried with backoff."""

    name: str
    step: Callable[[], object]
    stop: threading.Event
    interval_s: float = 0.0
    healthy: bool = True
    last_error: str = ""
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def _run(self) -> None:
        backoff = 0.5
        while not self.stop.is_set():
            try:
                self.step()
            except Exception as exc:
                self.healthy, self.last_error = False, f"{type(exc).__name__}: {exc}"
                _log.warning("%s failed (retrying in %.1f s): %s", self.name, backoff, exc)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            self.healthy, self.last_error, backoff = True, "", 0.5
            if self.interval_s:
                self.stop.wait(self.interval_s)


class ReviewService:
    """The review service's parts, started and stopped together."""

    def __init__(self, settings: ReviewSettings) -> None:
        self.settings = settings
        self.stop = threading.Event()
        self.registry = CollectorRegistry()
        self.metrics = ReviewMetrics(self.registry)
        self.health = HealthState()
        self.health.set_rules_only_allowed(True)
        self.store = CaseStore(open_engine(settings.database_url()), Rules.from_settings(settings))
        endpoints = resolve_endpoints(settings)
        self.bootstrap = endpoints.kafka_bootstrap
        lists = RedisLists(
            redis_client(endpoints.redis_url, 2000, cluster=settings.redis_cluster),
            prefix=f"{settings.redis_prefix}:list",
        )

        def apply_list(name: ListName, entity: ListEntity, value: str) -> None:
            lists.add(name, entity, [value])

        cases = timeline.from_store(self.store)
        self.console = Console(
            store=self.store,
            settings=settings,
            metrics=self.metrics,
            apply_list=apply_list,
            timeline=timeline.from_archive(settings.review_archive_url, cases)
            if settings.review_archive_url
            else cases,
            rule_descriptions=rule_descriptions(settings.review_rules_file),
        )
        self.intake: Intake | None = None
        self.relay: LabelRelay | None = None
        self.workers: list[Worker] = []
        self.http: HealthServer | None = None
        self.web: uvicorn.Server | None = None
        self.web_thread: threading.Thread | None = None
        self.console_url = ""
        self._refreshed = -METRICS_REFRESH_S

    def start(self) -> None:
        """Open the console socket, start intake, relay and the probes."""
        settings = self.settings
        self.intake = Intake(
            self.store,
            kafka_clients.consumer(
                settings, self.bootstrap, settings.review_group, OFFSETS_BY_HAND
            ),
            settings.topic_review,
            self.metrics,
            settings.max_message_bytes,
        )
        self.relay = LabelRelay(
            self.store,
            lambda: kafka_clients.producer(
                settings,
                self.bootstrap,
                {"transactional.id": settings.review_transactional_id, "linger.ms": 0},
            ),
            lambda: kafka_clients.consumer(
                settings,
                self.bootstrap,
                f"{settings.review_group}-relay",
                {"enable.partition.eof": True},
            ),
            settings.topic_labels,
        )
        intake = self.intake
        self.workers = [
            Worker("review-intake", intake.poll_once, self.stop),
            Worker("label-relay", self._relay_step, self.stop, settings.review_relay_interval_s),
        ]
        for worker in self.workers:
            worker.thread.start()
        self.http = serve_http(
            self.registry, self.health, host=settings.metrics_host, port=settings.metrics_port
        )
        sock = socket.socket(socket.AF_INET6 if ":" in settings.review_host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.review_host, settings.review_port))
        host, port = sock.getsockname()[:2]
        self.console_url = f"http://{host}:{port}/"
        config = uvicorn.Config(
            create_app(self.console),
            log_level="warning",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        self.web = uvicorn.Server(config)
        web = self.web
        self.web_thread = threading.Thread(
            target=lambda: web.run(sockets=[sock]), name="console", daemon=True
        )
        self.web_thread.start()
        _log.info(
            "console on %s (API docs %sapi/docs); metrics and health on http://%s:%d",
            self.console_url,
            self.console_url,
            self.http.host,
            self.http.port,
        )

    def _relay_step(self) -> None:
        relay = self.relay
        assert relay is not None  # noqa: S101 - set by start()
        if not relay.started:
            found = relay.start()
            self.metrics.labels.inc(found)
        while (sent := relay.relay_once()) > 0:
            self.metrics.labels.inc(sent)
        if time.monotonic() - self._refreshed >= METRICS_REFRESH_S:
            self.metrics.refresh(self.store, datetime.now(UTC))
            self._refreshed = time.monotonic()
        self.health.mark_progress()
        self.health.set_model_watcher_ok(
            all(w.healthy for w in self.workers),
            "; ".join(f"{w.name}: {w.last_error}" for w in self.workers if not w.healthy),
        )
        self.health.set_assigned(1)  # ready: the relay has reconciled with the topic

    def wait(self) -> None:
        """Block until a signal (or `stop`) asks the service to end."""
        while not self.stop.wait(1.0):
            if self.web_thread is not None and not self.web_thread.is_alive():
                raise FraudStreamError("the console's web server stopped; see the log above")

    def close(self) -> None:
        self.stop.set()
        if self.web is not None:
            self.web.should_exit = True
        for worker in self.workers:
            worker.thread.join(10)
        if self.web_thread is not None:
            self.web_thread.join(10)
        if self.intake is not None:
            self.intake.close()
        if self.http is not None:
            self.http.close()
        self.store.engine.dispose()


def serve(settings: ReviewSettings | None = None) -> None:
    """Run until SIGTERM/SIGINT."""
    stop = stop_on_signals(_log, "stopping the review service")
    service = ReviewService(settings or ReviewSettings())
    service.stop = stop
    if not service.store.has_users():
        _log.warning(
            "no console users yet: create one with "
            "`fraudctl review user add NAME --role admin` (prints its password once)"
        )
    service.start()
    try:
        service.wait()
    finally:
        service.close()


def main() -> None:
    """Console script `fraud-review`."""
    run_service(serve, _log)


if __name__ == "__main__":
    main()
