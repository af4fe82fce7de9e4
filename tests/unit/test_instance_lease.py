"""The instance lease's pure parts: who may take a lease over, the holder token, the error,
and the availability-first start when Redis cannot be reached."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import redis

from fraudstream.errors import FraudStreamError
from fraudstream.localstack.processes import free_port
from fraudstream.scoring.instance import (
    Holder,
    InstanceConflict,
    InstanceLease,
    pid_alive,
    previous_incarnation,
)

ME = Holder("scorer-a", 4242, "n-me", "2026-12-01T00:00:00Z")


@pytest.mark.parametrize(
    ("holder", "alive", "expected"),
    [
        # Another host: its pids mean nothing here; only its TTL can tell.
        (Holder("scorer-b", 17, "n1"), set(), None),
        (Holder("scorer-b", 4242, "n1"), set(), None),
        # This host, a pid that is not alive: an earlier run that died.
        (Holder("scorer-a", 17, "n1"), set(), "its pid 17 is not alive on this host"),
        # This host, a live pid: another scorer (or a recycled pid): wait out its TTL.
        (Holder("scorer-a", 17, "n1"), {17}, None),
        # This host, our own pid: a restarted container (pid 1 again), whatever `alive` says.
        (Holder("scorer-a", 4242, "n1"), {4242}, "it had our pid 4242 on this host"),
    ],
)
def test_previous_incarnation_decides_who_may_take_over(
    holder: Holder, alive: set[int], expected: str | None
) -> None:
    reason = previous_incarnation(holder, ME, alive.__contains__)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None
        assert reason.startswith(expected)


def test_previous_incarnation_checks_liveness_only_for_this_host() -> None:
    asked: list[int] = []

    def alive(pid: int) -> bool:
        asked.append(pid)
        return False

    assert previous_incarnation(Holder("elsewhere", 17, "n"), ME, alive) is None
    assert previous_incarnation(Holder("scorer-a", 4242, "n"), ME, alive) is not None
    assert asked == []  # neither needed os.kill
    assert previous_incarnation(Holder("scorer-a", 17, "n"), ME, alive) is not None
    assert asked == [17]


def test_holder_token_round_trips_and_is_small_json() -> None:
    token = ME.to_json()
    assert token == ('{"host":"scorer-a","pid":4242,"nonce":"n-me",'
                     '"started":"2026-12-01T00:00:00Z"}')  # fmt: skip
    assert Holder.from_json(token) == ME
    assert Holder.from_json(token.encode()) == ME


@pytest.mark.parametrize("raw", [b"", b"not json", b'{"host": "x"}', b"[1, 2]", b"\xff\xfe"])
def test_an_unreadable_token_is_a_foreign_holder(raw: bytes) -> None:
    holder = Holder.from_json(raw)
    assert holder.host.startswith("<unreadable")
    assert holder.pid == -1
    assert previous_incarnation(holder, ME, lambda _pid: False) is None


def test_this_process_is_unique_per_call() -> None:
    first, second = Holder.this_process(), Holder.this_process()
    assert (first.pid, first.host) == (os.getpid(), second.host)
    assert first.nonce != second.nonce


def test_pid_alive() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(0)
    assert not pid_alive(-1)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the pid is free
    assert not pid_alive(child.pid)


def test_a_zombie_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, left unreaped
        assert not pid_alive(child.pid)
    finally:
        child.wait()


def test_conflict_names_the_id_the_holder_and_the_fix() -> None:
    error = InstanceConflict("fraud-scorer-host-1", Holder("host-1", 77, "n", "2026-12-01T10:00Z"))
    assert isinstance(error, FraudStreamError)
    message = str(error)
    for part in ("'fraud-scorer-host-1'", "'host-1'", "pid 77", "FRAUD_SCORER_INSTANCE",
                 "unique value per scorer"):  # fmt: skip
        assert part in message


def test_unreachable_redis_at_start_runs_without_the_lease(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2)
    lease = InstanceLease(client, "g-i", ttl_s=60)
    with caplog.at_level(logging.WARNING, logger="fraudstream.scoring.instance"):
        assert lease.acquire() is False
    assert not lease.held
    assert "running without the instance lease" in caplog.text
    assert lease.renew() is True  # still unreachable: keeps trying, not lost
    lease.release()  # nothing to delete, no error
    client.close()


def test_key_and_ttl_validation() -> None:
    client = redis.Redis(port=free_port())
    assert InstanceLease(client, "fraud-scorer-x", prefix="p").key == "p:instance:fraud-scorer-x"
    with pytest.raises(ValueError, match="too short"):
        InstanceLease(client, "x", ttl_s=0.1)
    client.close()
