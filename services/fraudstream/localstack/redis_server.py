"""A local redis-server (Debian's package) on a free 127.0.0.1 port."""

from __future__ import annotations

import os
import shutil
import subprocess
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


def start(home: Path, port: int) -> int:
    """Launch redis-server bound to 127.0.0.1 with AOF persistence; returns its pid."""
    home.mkdir(parents=True, exist_ok=True)
    argv = [
        require_redis_server(),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(home.resolve()),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--daemonize", "no",
    ]  # fmt: skip
    return processes.start_daemon(argv, home / "redis.log")


def ping(port: int) -> bool:
    """True when the server on `port` answers PING."""
    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5)
        return bool(client.ping())
    except redis.RedisError:
        return False
