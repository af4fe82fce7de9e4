"""Small process helpers for the embedded stack: free ports, daemon start, safe stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from fraudstream.errors import LocalStackError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# Daemons started by this process, kept so they can be reaped (no zombies, no ResourceWarning).
_children: dict[int, subprocess.Popen[bytes]] = {}


def start_daemon(argv: Sequence[str], log_file: Path, cwd: Path | None = None) -> int:
    """Start a process detached from our session (it outlives the CLI); returns its pid."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    return proc.pid


def running_children() -> dict[int, list[str]]:
    """Daemons this process started that are still running: pid -> command line."""
    return {pid: [str(a) for a in proc.args] for pid, proc in list(_children.items())  # type: ignore[union-attr]
            if proc.poll() is None}  # fmt: skip


def is_running(pid: int, marker: str) -> bool:
    """True when `pid` is alive and its command line contains `marker`.

    The marker guards against a recycled pid: we never signal a process we did not start.
    A child of ours that exited is reaped here (a zombie's command line reads as empty).
    """
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return marker.encode() in cmdline and is_alive(pid)


def is_alive(pid: int) -> bool:
    """True when `pid` exists and has not exited (a zombie has)."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def stop(pid: int, marker: str, timeout_s: float = 30.0) -> bool:
    """SIGTERM, wait, then SIGKILL the process group; True if something was stopped."""
    if not is_running(pid, marker):
        return False
    _signal_group(pid, signal.SIGTERM)
    if wait_until(lambda: not is_running(pid, marker), timeout_s, interval=0.2):
        return True
    _signal_group(pid, signal.SIGKILL)
    if not wait_until(lambda: not is_running(pid, marker), 10.0, interval=0.1):
        raise LocalStackError(f"process {pid} ({marker}) survived SIGKILL; stop it by hand")
    return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(pid, sig)


def wait_until(condition: Callable[[], bool], timeout_s: float, interval: float = 0.25) -> bool:
    """Poll `condition` until it holds or `timeout_s` passes; returns whether it held."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def tail(path: Path, lines: int = 20) -> str:
    """Last lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
