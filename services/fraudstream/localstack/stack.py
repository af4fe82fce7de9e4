"""`up`, `down` and `status` of the embedded stack, and where clients find Kafka and Redis.

State (ports, pids) lives in `<state_dir>/stack.json`; `down` stops exactly the processes
recorded there (checked against their command lines), and `up` twice is harmless.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from fraudstream.errors import InfrastructureUnavailable, LocalStackError
from fraudstream.localstack import kafka, processes
from fraudstream.localstack import redis_server as local_redis
from fraudstream.settings import CommonSettings, mask_url

Say = Callable[[str], None]


@dataclass(frozen=True)
class StackState:
    """What `up` started: ports and pids."""

    kafka_pid: int
    kafka_port: int
    controller_port: int
    redis_pid: int
    redis_port: int
    kafka_version: str

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"


@dataclass(frozen=True)
class Endpoints:
    """Where clients connect: the configured infrastructure or the embedded stack."""

    kafka_bootstrap: str
    redis_url: str

    def __repr__(self) -> str:
        """With the Redis password masked (`mask_url`)."""
        redis_url = mask_url(self.redis_url)
        return f"Endpoints(kafka_bootstrap={self.kafka_bootstrap!r}, redis_url={redis_url!r})"


@dataclass(frozen=True)
class StackStatus:
    state: StackState | None
    kafka_running: bool
    redis_running: bool


class LocalStack:
    """The embedded Kafka broker and redis-server under one state directory."""

    def __init__(self, settings: CommonSettings) -> None:
        self.settings = settings
        self.state_dir = settings.state_dir
        self.state_file = settings.state_dir / "stack.json"

    def load(self) -> StackState | None:
        """The recorded state, or None when the stack was never started here."""
        try:
            return StackState(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def status(self) -> StackStatus:
        state = self.load()
        if state is None:
            return StackStatus(None, kafka_running=False, redis_running=False)
        return StackStatus(
            state,
            kafka_running=processes.is_running(state.kafka_pid, kafka.MAIN_CLASS),
            redis_running=processes.is_running(state.redis_pid, local_redis.MARKER),
        )

    def up(self, say: Say = print) -> StackState:
        """Start whatever is not running, await readiness, and return the state."""
        with self._lock():
            current = self.status()
            previous = current.state
            if previous and current.kafka_running and current.redis_running:
                say(
                    f"already running: Kafka {previous.kafka_bootstrap}, Redis {previous.redis_url}"
                )
                return previous
            kafka_pid, kafka_port, controller_port = self._start_kafka(current, say)
            redis_pid, redis_port = self._start_redis(current, say)
            state = StackState(
                kafka_pid=kafka_pid,
                kafka_port=kafka_port,
                controller_port=controller_port,
                redis_pid=redis_pid,
                redis_port=redis_port,
                kafka_version=self.settings.kafka_version,
            )
            self._save(state)
            self._await_ready(state, say)
            return state

    def down(self, say: Say = print) -> bool:
        """Stop what `up` started; True if anything was running."""
        with self._lock():
            state = self.load()
            if state is None:
                say("nothing to stop: the embedded stack was not started here")
                return False
            stopped = processes.stop(state.redis_pid, local_redis.MARKER)
            say("stopped Redis" if stopped else "Redis was not running")
            kafka_stopped = processes.stop(state.kafka_pid, kafka.MAIN_CLASS, timeout_s=60)
            say("stopped Kafka" if kafka_stopped else "Kafka was not running")
            self.state_file.unlink(missing_ok=True)
            return stopped or kafka_stopped

    def _start_kafka(self, current: StackStatus, say: Say) -> tuple[int, int, int]:
        previous = current.state
        if previous and current.kafka_running:
            return previous.kafka_pid, previous.kafka_port, previous.controller_port
        lib_dir = kafka.ensure_jars(self.settings.cache_dir, self.settings.kafka_version)
        layout = kafka.KafkaLayout(lib_dir=lib_dir, home=self.state_dir / "kafka")
        broker_port = _reuse_or_free(previous.kafka_port if previous else None)
        controller_port = _reuse_or_free(previous.controller_port if previous else None)
        kafka.prepare(layout, broker_port, controller_port)
        pid = kafka.start(layout, self.settings.kafka_heap)
        say(f"started Kafka {self.settings.kafka_version} (pid {pid}) on 127.0.0.1:{broker_port}")
        return pid, broker_port, controller_port

    def _start_redis(self, current: StackStatus, say: Say) -> tuple[int, int]:
        previous = current.state
        if previous and current.redis_running:
            return previous.redis_pid, previous.redis_port
        port = _reuse_or_free(previous.redis_port if previous else None)
        pid = local_redis.start(self.state_dir / "redis", port)
        say(f"started redis-server (pid {pid}) on 127.0.0.1:{port}")
        return pid, port

    def _await_ready(self, state: StackState, say: Say) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout_s
        kafka_log = self.state_dir / "kafka" / "kafka.log"
        local_redis.await_ping(
            state.redis_pid,
            state.redis_port,
            self.state_dir / "redis",
            self.settings.startup_timeout_s,
        )
        while not kafka_ready(state.kafka_bootstrap):
            if not processes.is_alive(state.kafka_pid):
                raise LocalStackError(f"Kafka exited during startup:\n{processes.tail(kafka_log)}")
            if time.monotonic() > deadline:
                raise LocalStackError(
                    f"Kafka not ready after {self.settings.startup_timeout_s:.0f} s; "
                    f"see {kafka_log}:\n{processes.tail(kafka_log)}"
                )
            time.sleep(0.25)
        say(f"ready: KAFKA_BOOTSTRAP_SERVERS={state.kafka_bootstrap} REDIS_URL={state.redis_url}")

    def _save(self, state: StackState) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        tmp.replace(self.state_file)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / ".lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield


_QUIET = logging.getLogger("fraudstream.localstack.probe")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


def kafka_ready(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """True when the broker answers a metadata request."""
    try:
        config: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": _QUIET}
        admin = AdminClient(config)
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return bool(metadata.brokers)


def _reuse_or_free(port: int | None) -> int:
    if port is not None and not processes.port_open(port):
        return port
    return processes.free_port()


def resolve_endpoints(settings: CommonSettings) -> Endpoints:
    """Configured endpoints win; otherwise those of the running embedded stack."""
    if settings.kafka_bootstrap_servers and settings.redis_url:
        return Endpoints(settings.kafka_bootstrap_servers, settings.redis_url)
    status = LocalStack(settings).status()
    state = status.state
    if state is None or not (status.kafka_running and status.redis_running):
        raise InfrastructureUnavailable(
            "no Kafka/Redis configured and the embedded stack is not running: "
            "run `fraudctl up`, or set KAFKA_BOOTSTRAP_SERVERS and REDIS_URL"
        )
    return Endpoints(
        settings.kafka_bootstrap_servers or state.kafka_bootstrap,
        settings.redis_url or state.redis_url,
    )
