"""One live scorer per `transactional.id`: a lease in Redis, taken before the producer exists.

Two scorers with the same `transactional.id` (`<group>-<instance>`; the instance defaults
to the host name, so two processes on one host collide) would fence each other in turn,
each `init_transactions()` killing the other's producer. The lease turns that into a clear
error at start-up. Key `<prefix>:instance:<transactional.id>`, value a JSON `Holder`, set
with NX and a TTL and renewed by a daemon thread through compare-and-set scripts (only the
holder renews or releases).

Who may take a held lease over at once (`previous_incarnation`): a holder on this host
whose pid is not alive here, or whose pid is ours (a restarted container runs as pid 1
again). Any other holder is waited out for the rest of its TTL (a crashed holder stops
renewing); if it is still held then, `InstanceConflict`.

Availability first: if Redis cannot be reached at start, the scorer runs without the lease
(a warning) and the renewal thread takes it as soon as Redis answers; if it then finds
another live holder, or later loses the lease to one, `on_lost` is called.
Limit: the same-host checks trust the host name. Two containers that share one (host
networking, or the same explicit `hostname`) each run as pid 1 and would take each other's
lease: give them distinct FRAUD_SCORER_INSTANCE values.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import redis

from fraudstream.errors import FraudStreamError

_log = logging.getLogger(__name__)

# Renew: extend our own lease; put it back if it vanished (expired while Redis was away, or
# Redis restarted empty); otherwise return the other holder's value.
_RENEW = """
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not held then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return held
"""
# Replace: swap an expected value (a dead holder's) for ours; 0 if it changed meanwhile.
_REPLACE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class InstanceConflict(FraudStreamError):
    """Another live scorer holds this transactional.id: starting would fence it."""

    def __init__(self, transactional_id: str, holder: Holder) -> None:
        self.transactional_id, self.holder = transactional_id, holder
        super().__init__(
            f"transactional.id {transactional_id!r} is in use by another scorer (host "
            f"{holder.host!r}, pid {holder.pid}, since {holder.started}): starting would fence "
            "it. Set FRAUD_SCORER_INSTANCE to a unique value per scorer (or stop the other one)."
        )


@dataclass(frozen=True)
class Holder:
    """Who holds a lease: host name, pid, a nonce unique to the process, start time."""

    host: str
    pid: int
    nonce: str
    started: str = ""

    @classmethod
    def this_process(cls) -> Holder:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return cls(socket.gethostname(), os.getpid(), secrets.token_hex(8), started)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Holder:
        """The holder a lease value names; an unreadable value is a foreign holder."""
        try:
            data = json.loads(raw)
            return cls(str(data["host"]), int(data["pid"]), str(data["nonce"]),
                       str(data.get("started", "")))  # fmt: skip
        except (ValueError, TypeError, KeyError):
            text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
            return cls(host=f"<unreadable {text[:40]!r}>", pid=-1, nonce="")


def pid_alive(pid: int) -> bool:
    """True when a process `pid` runs on this host (EPERM: it exists, not ours); a zombie
    (exited, not yet reaped: a killed scorer whose parent has not waited) is not alive."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (or it just exited): trust the signal check
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def previous_incarnation(holder: Holder, me: Holder, alive: Callable[[int], bool]) -> str | None:
    """Why `holder` is a dead earlier run of this instance that `me` may replace at once,
    or None when only its TTL can tell (another host, or a live pid here)."""
    if holder.host != me.host:
        return None
    if holder.pid == me.pid:
        return f"it had our pid {me.pid} on this host (a restarted container)"
    if not alive(holder.pid):
        return f"its pid {holder.pid} is not alive on this host"
    return None


class InstanceLease:
    """The lease on one transactional.id; `acquire()` before building the producer,
    `release()` after closing it. A daemon thread renews it every `ttl_s / 3`."""

    def __init__(
        self,
        client: redis.Redis,
        transactional_id: str,
        *,
        prefix: str = "fraud",
        ttl_s: float = 15.0,
        me: Holder | None = None,
        alive: Callable[[int], bool] = pid_alive,
        on_lost: Callable[[Holder], None] | None = None,
    ) -> None:
        if ttl_s < 0.3:
            raise ValueError(f"lease TTL {ttl_s} s is too short to renew (at least 0.3 s)")
        self.client, self.transactional_id = client, transactional_id
        self.key = f"{prefix}:instance:{transactional_id}"
        self.ttl_s, self.me, self.alive = ttl_s, me or Holder.this_process(), alive
        self.token = self.me.to_json()
        self.on_lost = on_lost  # called once, on the renewal thread, if another holder wins
        self.held = False  # False while running without the lease (Redis unreachable)
        self._renew = client.register_script(_RENEW)
        self._replace = client.register_script(_REPLACE)
        self._release = client.register_script(_RELEASE)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._redis_down = False
        self._contested_until: float | None = None  # waiting out a holder (monotonic)

    @property
    def ttl_ms(self) -> int:
        return max(int(self.ttl_s * 1000), 1)

    def acquire(self, timeout_s: float | None = None) -> bool:
        """Take the lease, waiting out a foreign holder for at most the rest of its TTL (and
        `timeout_s`, if given); True once held, False when Redis is unreachable (the scorer
        runs without it, and the renewal thread takes the lease once Redis answers).
        Raises `InstanceConflict` if another live scorer keeps it."""
        started = time.monotonic()
        try:
            while (holder := self._try_take()) is not None:
                until = self._contest(holder)
                if timeout_s is not None:
                    until = min(until, started + timeout_s)
                if time.monotonic() >= until:
                    raise InstanceConflict(self.transactional_id, holder)
                time.sleep(min(0.2, max(until - time.monotonic(), 0.0)))
        except redis.RedisError as exc:
            _log.warning("Redis unreachable (%s): running without the instance lease on %r; "
                         "two scorers with this transactional.id would fence each other "
                         "unnoticed until it is taken", exc, self.transactional_id)  # fmt: skip
            self._redis_down = True
            self._start_renewing()
            return False
        self._took()
        self._start_renewing()
        return True

    def _try_take(self) -> Holder | None:
        """One attempt: None once the lease is ours, else the holder that keeps it."""
        raw: bytes | None = None
        for _ in range(3):  # the key may expire between our SET and GET
            if self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
                return None
            raw = cast(bytes | None, self.client.get(self.key))
            if raw is not None:
                break
        value = raw or b""
        holder = Holder.from_json(value)
        if holder.nonce == self.me.nonce:
            return None
        reason = previous_incarnation(holder, self.me, self.alive)
        if reason is not None and self._replace(keys=[self.key], args=[value, self.token,
                                                                      self.ttl_ms]):  # fmt: skip
            _log.warning("took over instance lease %s from host %r pid %d: %s",
                         self.key, holder.host, holder.pid, reason)  # fmt: skip
            return None
        return holder

    def _contest(self, holder: Holder) -> float:
        """When (monotonic) to give up on `holder`: the rest of its TTL as first seen, plus
        a little; a holder that still renews then is alive."""
        if self._contested_until is None:
            remaining_s = max(cast(int, self.client.pttl(self.key)), 0) / 1000
            self._contested_until = time.monotonic() + remaining_s + min(1.0, self.ttl_s / 10)
            _log.warning("transactional.id %r is held by host %r pid %d; waiting up to %.1f s "
                         "for its lease to expire", self.transactional_id, holder.host,
                         holder.pid, self._contested_until - time.monotonic())  # fmt: skip
        return self._contested_until

    def _took(self) -> None:
        self.held, self._contested_until = True, None
        _log.info("instance lease %s taken (ttl %.0f s)", self.key, self.ttl_s)

    def renew(self) -> bool:
        """One step of the renewal thread; False once the lease is lost to another scorer
        (then `on_lost` was called). Without the lease (Redis was unreachable), it tries to
        take it as `acquire` would. Redis errors are logged once per outage."""
        try:
            holder = self._step()
        except redis.RedisError as exc:
            if not self._redis_down:
                _log.warning("instance lease %s not renewed, retrying: %s", self.key, exc)
            self._redis_down = True
            return True
        if self._redis_down:
            _log.info("instance lease %s: Redis answers again (held: %s)", self.key, self.held)
        self._redis_down = False
        if holder is None:
            return True
        self.held = False
        self._stop.set()
        _log.error("instance lease %s is held by host %r pid %d, not us: another scorer uses "
                   "transactional.id %r; set FRAUD_SCORER_INSTANCE to a unique value per "
                   "scorer", self.key, holder.host, holder.pid, self.transactional_id)  # fmt: skip
        if self.on_lost is not None:
            self.on_lost(holder)
        return False

    def _step(self) -> Holder | None:
        """Renew (or take) the lease: None while ours or while waiting out a holder."""
        if self.held:
            answer: Any = self._renew(keys=[self.key], args=[self.token, self.ttl_ms])
            return None if answer == 1 else Holder.from_json(answer)
        holder = self._try_take()
        if holder is None:
            self._took()
            return None
        return holder if time.monotonic() >= self._contest(holder) else None

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours (at shutdown)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        if not self.held:
            return
        self.held = False
        try:
            self._release(keys=[self.key], args=[self.token])
        except redis.RedisError as exc:
            _log.warning("instance lease %s not released (expires in %.0f s): %s",
                         self.key, self.ttl_s, exc)  # fmt: skip

    def _start_renewing(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="instance-lease", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            if not self.renew():
                return

    def __enter__(self) -> InstanceLease:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()
