"""The instance lease against a real redis-server: one live scorer per transactional.id."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import cast

import pytest
import redis

from fraudstream.scoring.instance import Holder, InstanceConflict, InstanceLease
from tests.waiting import await_condition

pytestmark = pytest.mark.integration

HOST = socket.gethostname()
TTL_S = 1.5  # renewed every 0.5 s


@pytest.fixture
def lease_factory(
    redis_client: redis.Redis, unique: Callable[[str], str]
) -> Iterator[Callable[..., InstanceLease]]:
    """Leases on one fresh transactional.id, released at the end."""
    prefix, made = unique("lease"), []

    def make(me: Holder | None = None, **kwargs: object) -> InstanceLease:
        lease = InstanceLease(redis_client, "fraud-scorer-h1", prefix=prefix, me=me,
                              **{"ttl_s": TTL_S, **kwargs})  # type: ignore[arg-type]  # fmt: skip
        made.append(lease)
        return lease

    yield make
    for lease in made:
        lease.release()
    redis_client.delete(f"{prefix}:instance:fraud-scorer-h1")


@pytest.fixture
def live_pid() -> Iterator[int]:
    """A process alive on this host for the test (standing in for another scorer)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child.pid
    child.kill()
    child.wait()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_second_scorer_with_the_same_id_is_refused(
    lease_factory: Callable[..., InstanceLease], live_pid: int
) -> None:
    first = lease_factory(Holder(HOST, live_pid, "first"))
    assert first.acquire() is True
    second = lease_factory()  # this process: same host, another live pid holds it
    started = time.monotonic()
    with pytest.raises(InstanceConflict) as refused:
        second.acquire()
    waited = time.monotonic() - started
    assert 0.5 < waited < TTL_S + 3  # waited out the TTL it saw, which the holder renewed
    message = str(refused.value)
    assert "'fraud-scorer-h1'" in message
    assert f"pid {live_pid}" in message
    assert f"host {HOST!r}" in message
    assert "Set FRAUD_SCORER_INSTANCE to a unique value per scorer" in message
    assert first.held
    assert not second.held
    assert first.client.get(first.key) == first.token.encode()


def test_a_live_holder_on_another_host_is_refused_too(
    lease_factory: Callable[..., InstanceLease],
) -> None:
    other = lease_factory(Holder("another-host", os.getpid(), "other"))
    assert other.acquire()
    with pytest.raises(InstanceConflict, match="host 'another-host'"):
        lease_factory().acquire()


@pytest.mark.parametrize("pid", ["dead", "ours"])
def test_a_dead_previous_incarnation_is_taken_over_at_once(
    lease_factory: Callable[..., InstanceLease],
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
    pid: str,
) -> None:
    lease = lease_factory()
    crashed = Holder(HOST, dead_pid() if pid == "dead" else os.getpid(), "crashed")
    redis_client.set(lease.key, crashed.to_json(), px=60_000)  # never renewed again
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="fraudstream.scoring.instance"):
        assert lease.acquire(timeout_s=10) is True
    assert time.monotonic() - started < 1.0  # not the 60 s TTL
    assert redis_client.get(lease.key) == lease.token.encode()
    assert f"took over instance lease {lease.key}" in caplog.text


def test_a_holder_elsewhere_that_stopped_renewing_is_waited_out(
    lease_factory: Callable[..., InstanceLease], redis_client: redis.Redis
) -> None:
    lease = lease_factory()
    redis_client.set(lease.key, Holder("crashed-host", 1, "x").to_json(), px=1200)
    started = time.monotonic()
    assert lease.acquire() is True
    assert 0.8 < time.monotonic() - started < 5
    assert redis_client.get(lease.key) == lease.token.encode()


def test_renewal_keeps_the_lease_and_puts_back_a_lost_key(
    lease_factory: Callable[..., InstanceLease], redis_client: redis.Redis
) -> None:
    lease = lease_factory()
    assert lease.acquire()
    time.sleep(TTL_S * 2.5)  # far past the TTL: only renewal keeps it
    assert redis_client.get(lease.key) == lease.token.encode()
    assert 0 < cast(int, redis_client.pttl(lease.key)) <= TTL_S * 1000
    redis_client.delete(lease.key)  # Redis restarted empty, say
    await_condition(lambda: redis_client.get(lease.key) is not None, TTL_S * 3,
                    "the lease to be renewed")  # fmt: skip
    assert redis_client.get(lease.key) == lease.token.encode()
    assert lease.held


def test_release_frees_it_and_only_the_holder_can(
    lease_factory: Callable[..., InstanceLease], redis_client: redis.Redis, live_pid: int
) -> None:
    first = lease_factory(Holder(HOST, live_pid, "first"))
    assert first.acquire()
    first.release()
    assert redis_client.get(first.key) is None
    second = lease_factory()
    started = time.monotonic()
    assert second.acquire()
    assert time.monotonic() - started < 0.5  # free: no wait
    first.release()  # a second release must not delete the new holder's lease
    assert redis_client.get(second.key) == second.token.encode()


def test_losing_the_lease_to_another_scorer_calls_on_lost(
    lease_factory: Callable[..., InstanceLease], redis_client: redis.Redis
) -> None:
    lost: list[Holder] = []
    called = threading.Event()

    def on_lost(holder: Holder) -> None:
        lost.append(holder)
        called.set()

    lease = lease_factory(on_lost=on_lost)
    assert lease.acquire()
    thief = Holder("elsewhere", 9, "thief")
    redis_client.set(lease.key, thief.to_json(), px=60_000)  # e.g. after our long pause
    assert called.wait(TTL_S * 3)
    assert lost == [thief]
    assert not lease.held
    lease.release()  # must not delete the thief's lease
    assert redis_client.get(lease.key) == thief.to_json().encode()
