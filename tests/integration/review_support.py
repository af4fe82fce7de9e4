"""The review tests' parts: a real PostgreSQL server from Debian's `postgresql` package
(initdb on a free loopback port, one database per test), the case store on it or on
SQLite, and review cases to feed it."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from fraudstream.contracts import Action, DecisionPath, Reason, ReasonSource, ReviewCase
from fraudstream.localstack import processes
from fraudstream.review.database import open_engine
from fraudstream.review.settings import ReviewSettings
from fraudstream.review.store import CaseStore, Rules
from tests.factories import NOW, transaction
from tests.waiting import await_condition

DATABASES = ("sqlite", "postgresql")


def pg_bindir() -> Path:
    """The newest installed PostgreSQL's binaries; fail (not skip) with the package."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3])
    )
    if found:
        return Path(found[-1]).parent
    if on_path := shutil.which("initdb"):
        return Path(on_path).parent
    pytest.fail("PostgreSQL's initdb not found: apt-get install postgresql (.ci/run does)")


@dataclass
class PostgresServer:
    """A private PostgreSQL cluster; `database()` creates an empty database per caller."""

    home: Path
    port: int
    pid: int

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://fraud@127.0.0.1:{self.port}/postgres"

    def database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return f"postgresql+psycopg://fraud@127.0.0.1:{self.port}/{name}"


def _as_owner(argv: list[str], home: Path) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the `postgres` user."""
    if os.geteuid() != 0:
        return argv
    shutil.chown(home, "postgres", "postgres")
    return ["runuser", "-u", "postgres", "--", *argv]


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """initdb + postgres on 127.0.0.1:<free port> with trust auth for user `fraud`, in a
    directory of its own (pytest's are private to root, which `postgres` cannot enter),
    removed afterwards."""
    bindir = pg_bindir()
    home = Path(tempfile.mkdtemp(prefix="fraudstream-pg-"))
    data = home / "data"
    subprocess.run(
        _as_owner(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "fraud",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
            home,
        ),
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = processes.free_port()
    argv = _as_owner(
        [
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={home}",
            "-c",
            "fsync=off",
            "-c",
            "max_connections=200",
        ],
        home,
    )
    pid = processes.start_daemon(argv, home / "postgres.log")
    server = PostgresServer(home, port, pid)
    try:
        await_condition(lambda: _accepts(server), 60, "PostgreSQL to accept connections")
        yield server
    finally:
        processes.stop(pid, "postgres")
        shutil.rmtree(home, ignore_errors=True)


def _accepts(server: PostgresServer) -> bool:
    engine = create_engine(server.admin_url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
    finally:
        engine.dispose()


def review_case(
    tx_id: str,
    *,
    amount: float = 120.0,
    score: float | None = 0.6,
    action: Action = Action.REVIEW,
    created_at: datetime = NOW,
    reasons: list[Reason] | None = None,
    **tx: object,
) -> ReviewCase:
    """A `fraud.review` case for transaction `tx_id` (its other fields as `transaction()`)."""
    return ReviewCase(
        transaction=transaction(transaction_id=tx_id, amount=amount, **tx),
        action_suggested=action,
        score=score,
        path=DecisionPath.ML if score is not None else DecisionPath.RULES,
        reasons=reasons or [],
        contributions={"card_count_1h": 1.4, "amount_log": -0.3},
        model_version=None if score is None else "v-test",
        created_at=created_at,
    )


def rule_reason(code: str = "CARD_TESTING_BURST", detail: str = "") -> Reason:
    return Reason(code=code, source=ReasonSource.RULE, detail=detail)


def settings_for(url: str, state_dir: Path, **overrides: object) -> ReviewSettings:
    return ReviewSettings(state_dir=state_dir, review_database_url=url, **overrides)  # type: ignore[arg-type]


StoreFactory = Callable[..., CaseStore]


@contextmanager
def store_factory_on(url: str, state_dir: Path) -> Iterator[StoreFactory]:
    """Makes case stores on `url` (settings overridable); closes them all afterwards."""
    made: list[CaseStore] = []

    def make(**overrides: object) -> CaseStore:
        settings = settings_for(url, state_dir, **overrides)
        made.append(CaseStore(open_engine(settings.database_url()), Rules.from_settings(settings)))
        return made[-1]

    try:
        yield make
    finally:
        for store in made:
            store.close()


def later(minutes: float) -> datetime:
    return NOW + timedelta(minutes=minutes)
