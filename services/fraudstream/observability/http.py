"""Health state and a tiny HTTP server for `/metrics`, `/healthz` and `/readyz`.

Kubernetes probes and Prometheus scrape these; the service loop only flips flags on
`HealthState`, so the endpoints never touch Kafka, Redis or the model themselves.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


class HealthState:
    """Thread-safe liveness and readiness of a service loop, on an injected monotonic clock."""

    def __init__(self, clock: Clock = time.monotonic, liveness_timeout_s: float = 30.0) -> None:
        if liveness_timeout_s <= 0:
            raise ValueError(f"liveness_timeout_s must be > 0, got {liveness_timeout_s}")
        self._clock = clock
        self._timeout = liveness_timeout_s
        self._lock = threading.Lock()
        # Startup counts as progress: the loop gets one full timeout to make its first poll.
        self._last_progress = clock()
        self._assigned = 0
        self._model_loaded = False
        self._rules_only_allowed = False
        self._model_watcher_problem: str | None = None
        self._rebuilding = False

    def mark_progress(self) -> None:
        """Record a loop iteration (idle polls included)."""
        now = self._clock()
        with self._lock:
            self._last_progress = now

    def set_assigned(self, n: int) -> None:
        """Record how many partitions are assigned to this instance."""
        with self._lock:
            self._assigned = n

    def set_model_loaded(self, loaded: bool) -> None:
        """Record whether a scoring model is loaded."""
        with self._lock:
            self._model_loaded = loaded

    def set_rules_only_allowed(self, allowed: bool) -> None:
        """Record whether serving without a model (rules only) counts as ready."""
        with self._lock:
            self._rules_only_allowed = allowed

    def set_model_watcher_ok(self, ok: bool, reason: str = "") -> None:
        """Record whether the model watcher's last reload was clean (`reason` says why not)."""
        with self._lock:
            self._model_watcher_problem = None if ok else (reason or "reload failed")

    def set_rebuilding(self, rebuilding: bool) -> None:
        """Record whether feature state is being rebuilt from the log (not ready meanwhile)."""
        with self._lock:
            self._rebuilding = rebuilding

    def live(self, now: float | None = None) -> tuple[bool, str]:
        """Alive while the loop made progress within the liveness timeout."""
        now = self._clock() if now is None else now
        with self._lock:
            idle = now - self._last_progress
        if idle > self._timeout:
            return False, f"no loop progress for {idle:.1f}s (limit {self._timeout:g}s)"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        """Ready when partitions are assigned, a model is loaded or rules-only is allowed, and
        the model watcher is not failing."""
        with self._lock:
            assigned, loaded, rules_only, watcher_problem = (
                self._assigned,
                self._model_loaded,
                self._rules_only_allowed,
                self._model_watcher_problem,
            )
        if assigned <= 0:
            return False, "no partitions assigned"
        if not (loaded or rules_only):
            return False, "no model loaded and rules-only serving is not allowed"
        if watcher_problem is not None:
            return False, f"model watcher: {watcher_problem}"
        if self._rebuilding:
            return False, "feature state is being rebuilt from the log (decisions degraded)"
        return True, "ok"


class _Handler(BaseHTTPRequestHandler):
    """GET-only handler; never reads a request body."""

    server: _Server
    server_version = "fraudstream"
    sys_version = ""
    timeout = 5.0  # a stalled client cannot hold a thread for long

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(HTTPStatus.OK, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._probe(*self.server.health.live())
        elif path == "/readyz":
            self._probe(*self.server.health.ready())
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n")

    def _probe(self, ok: bool, reason: str) -> None:
        status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
        self._send(status, f"{reason}\n".encode())

    def _send(
        self, status: HTTPStatus, body: bytes, content_type: str = "text/plain; charset=utf-8"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Probes and scrapes every few seconds would flood stderr; stay quiet."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], registry: CollectorRegistry, health: HealthState
    ) -> None:
        self.registry = registry
        self.health = health
        super().__init__(address, _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        """Log handler failures instead of printing tracebacks to stderr."""
        logger.exception("observability endpoint failed for %s", client_address)


class HealthServer:
    """A running endpoint server; `port` is the bound port, `close()` stops it."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self.host, self.port = server.server_address[0], server.server_address[1]
        # A short poll interval bounds how long close() waits; idle cost is 10 wakeups/s.
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.1,), name="observability-http", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)

    def __enter__(self) -> HealthServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(
    registry: CollectorRegistry, health: HealthState, host: str = "127.0.0.1", port: int = 0
) -> HealthServer:
    """Serve `/metrics`, `/healthz` and `/readyz` from a daemon thread; port 0 picks a free one."""
    return HealthServer(_Server((host, port), registry, health))
