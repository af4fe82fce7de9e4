"""A local redis-server (Debian's package) on a free 127.0.0.1 port."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import redis

from fraudstream.errors import LocalStackError
from fraudstream.localstack import processes

MARKER = "redis-server"


def require_redis_server() -> str:
    """Path of redis-server, installing Debian's package when missing and we are root."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for argv in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "redis-server"],
        ):
            result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
            if result.returncode != 0:
                raise LocalStackError(f"{' '.join(argv)} failed:\n{result.stderr[-2000:]}")
        found = shutil.which("redis-server")
        if found:
            return found
    raise LocalStackError(
        "redis-server is needed for the embedded stack: install it "
        "(Debian: apt-get install redis-server) or set REDIS_URL"
    )


def start(home: Path, port: int, *, persistent: bool = True, extra_args: Sequence[str] = ()) -> int:
    """Launch redis-server bound to 127.0.0.1 (AOF on unless not `persistent`); returns its pid.

    `extra_args` are further `--option value` pairs, e.g. the cluster settings of a node.
    """
    home.mkdir(parents=True, exist_ok=True)
    aof = (
        ["--appendonly", "yes", "--appendfsync", "everysec"]
        if persistent
        else ["--appendonly", "no"]
    )
    argv = [
        require_redis_server(),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(home.resolve()),
        *aof,
        "--save", "",
        "--daemonize", "no",
        *extra_args,
    ]  # fmt: skip
    return processes.start_daemon(argv, log_path(home))


def log_path(home: Path) -> Path:
    """Where the server started in `home` writes its log."""
    return home / "redis.log"


def ping(port: int) -> bool:
    """True when the server on `port` answers PING."""
    try:
        with redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def await_ping(pid: int, port: int, home: Path, timeout_s: float) -> None:
    """Return once the server `start` launched in `home` answers PING; raise if it died or hung."""
    # is_alive, not is_running: redis-server rewrites its title at start.
    processes.wait_until(
        lambda: ping(port) or not processes.is_alive(pid), timeout_s, interval=0.05
    )
    if not processes.is_alive(pid):
        log = processes.tail(log_path(home))
        raise LocalStackError(f"redis-server on port {port} exited during startup:\n{log}")
    if not ping(port):
        raise LocalStackError(
            f"redis-server on port {port} did not answer PING within {timeout_s:.0f} s; "
            f"see {log_path(home)}"
        )
