"""Atomic file writes, checksums, read-only files and the per-model lock of the registry."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old or the new file, never a partial one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Exclusive advisory lock on `directory/.lock` (serialises stage changes)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def mismatched_files(directory: Path, digests: Mapping[str, str]) -> list[str]:
    """Names in `digests` whose file under `directory` is missing or has another SHA-256."""
    return sorted(
        name
        for name, digest in digests.items()
        if not (directory / name).is_file() or sha256_file(directory / name) != digest
    )


def make_read_only(directory: Path) -> None:
    """Make every file in `directory` read-only (r--r--r--)."""
    for path in directory.iterdir():
        if path.is_file():
            path.chmod(READ_ONLY)
