"""HealthState on a fake clock, and the /metrics, /healthz, /readyz server over real HTTP."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter

from fraudstream.observability import HealthServer, HealthState, serve


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def health(clock: FakeClock) -> HealthState:
    return HealthState(clock=clock, liveness_timeout_s=30.0)


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("demo_events_total", "Events.", registry=registry).inc(3)
    return registry


@pytest.fixture
def server(registry: CollectorRegistry, health: HealthState) -> Iterator[HealthServer]:
    server = serve(registry, health, host="127.0.0.1", port=0)
    yield server
    server.close()


def get(server: HealthServer, path: str) -> tuple[int, str, str]:
    url = f"http://127.0.0.1:{server.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers["Content-Type"], err.read().decode()


def make_ready(health: HealthState) -> None:
    health.set_assigned(3)
    health.set_model_loaded(True)


# HealthState, no network.


def test_live_within_timeout_of_start_and_of_last_progress(
    health: HealthState, clock: FakeClock
) -> None:
    assert health.live() == (True, "ok")
    clock.now += 30.0
    assert health.live()[0]
    clock.now += 0.5
    alive, reason = health.live()
    assert not alive
    assert "no loop progress for 30.5s" in reason
    health.mark_progress()
    assert health.live() == (True, "ok")
    assert not health.live(now=clock.now + 31)[0]


def test_ready_needs_partitions_and_a_model_or_rules_only(health: HealthState) -> None:
    assert health.ready() == (False, "no partitions assigned")
    health.set_assigned(2)
    ready, reason = health.ready()
    assert not ready
    assert "no model loaded" in reason
    health.set_rules_only_allowed(True)
    assert health.ready() == (True, "ok")
    health.set_rules_only_allowed(False)
    health.set_model_loaded(True)
    assert health.ready() == (True, "ok")
    health.set_assigned(0)  # revoked in a rebalance
    assert health.ready() == (False, "no partitions assigned")


def test_a_failing_model_watcher_makes_the_service_unready(health: HealthState) -> None:
    make_ready(health)
    health.set_model_watcher_ok(False, "cannot load fraud v2 as champion: lightgbm.onnx ...")
    assert health.ready() == (
        False,
        "model watcher: cannot load fraud v2 as champion: lightgbm.onnx ...",
    )
    assert health.live() == (True, "ok")  # readiness only: restarting would not help
    health.set_model_watcher_ok(True)
    assert health.ready() == (True, "ok")
    health.set_model_watcher_ok(False)
    assert health.ready() == (False, "model watcher: reload failed")


def test_liveness_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="liveness_timeout_s"):
        HealthState(liveness_timeout_s=0)


# HTTP endpoints.


def test_healthy_service_answers_200_everywhere(server: HealthServer, health: HealthState) -> None:
    make_ready(health)
    assert server.port > 0
    assert get(server, "/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
    assert get(server, "/readyz") == (200, "text/plain; charset=utf-8", "ok\n")


def test_stale_progress_fails_liveness_only(
    server: HealthServer, health: HealthState, clock: FakeClock
) -> None:
    make_ready(health)
    clock.now += 45.0
    status, _, body = get(server, "/healthz")
    assert status == 503
    assert body.startswith("no loop progress for 45.0s")
    assert get(server, "/readyz")[0] == 200
    health.mark_progress()
    assert get(server, "/healthz")[0] == 200


def test_not_ready_returns_503_with_reason(server: HealthServer, health: HealthState) -> None:
    assert get(server, "/readyz") == (503, "text/plain; charset=utf-8", "no partitions assigned\n")
    health.set_assigned(1)
    status, _, body = get(server, "/readyz")
    assert status == 503
    assert "no model loaded" in body
    assert get(server, "/healthz")[0] == 200


def test_metrics_exposes_the_registry_in_text_format(
    server: HealthServer, registry: CollectorRegistry
) -> None:
    status, content_type, body = get(server, "/metrics")
    assert status == 200
    assert content_type == CONTENT_TYPE_LATEST
    assert "# TYPE demo_events_total counter" in body
    assert "demo_events_total 3.0" in body
    Counter("demo_more_total", "More.", registry=registry).inc()
    assert "demo_more_total 1.0" in get(server, "/metrics")[2]


def test_query_strings_are_ignored_and_unknown_paths_are_404(server: HealthServer) -> None:
    assert get(server, "/healthz?verbose=1")[0] == 200
    assert get(server, "/")[0] == 404
    assert get(server, "/metrics/extra")[0] == 404


def test_only_get_is_served(server: HealthServer) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/healthz", data=b"x" * 10_000, method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(request, timeout=5)  # noqa: S310 (local http)
    excinfo.value.close()
    assert excinfo.value.code == 501


def test_requests_are_not_logged_to_stderr(
    server: HealthServer, capfd: pytest.CaptureFixture[str]
) -> None:
    get(server, "/healthz")
    get(server, "/nope")
    assert capfd.readouterr().err == ""


def test_close_releases_the_port(registry: CollectorRegistry, health: HealthState) -> None:
    with serve(registry, health) as server:
        port = server.port
        assert get(server, "/healthz")[0] == 200
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
