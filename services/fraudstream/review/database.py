"""The case store's engine: opened from a URL, migrated to the newest schema on start."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from fraudstream.errors import FraudStreamError
from fraudstream.settings import mask_url

MIGRATIONS = Path(__file__).with_name("migrations")


class ReviewStoreError(FraudStreamError):
    """The case store cannot be opened, migrated or written."""


def open_engine(url: str) -> Engine:
    """An engine on `url` (SQLite file or PostgreSQL), with the schema upgraded to head.

    SQLite runs in WAL mode with a busy timeout, so the console, intake and relay threads
    of one process (and `fraudctl review` commands beside it) share the file safely."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ReviewStoreError(
            f"review database URL {mask_url(url)!r} is not valid: {exc}"
        ) from exc
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    try:
        upgrade(engine)
    except OperationalError as exc:
        engine.dispose()
        raise ReviewStoreError(
            f"cannot open the review database {parsed.render_as_string(hide_password=True)}: "
            f"{exc.orig}; check FRAUD_REVIEW_DATABASE_URL"
        ) from exc
    return engine


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine) -> None:
    """Apply every migration the database lacks (idempotent; a no-op at head)."""
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    """The newest revision in `migrations/versions/`."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
