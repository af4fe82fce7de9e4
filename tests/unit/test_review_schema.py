"""The case store's migrations create exactly the tables `schema.py` declares: a change to
one without the other fails here (Alembic's autogenerate comparison, on SQLite in memory)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, Table, create_engine

from fraudstream.review.database import head_revision, upgrade
from fraudstream.review.schema import Base


def _differences(metadata: MetaData) -> list[object]:
    engine = create_engine("sqlite://")
    try:
        upgrade(engine)
        with engine.connect() as connection:
            return list(compare_metadata(MigrationContext.configure(connection), metadata))
    finally:
        engine.dispose()


def test_migrations_match_the_declared_tables() -> None:
    assert head_revision() is not None
    assert _differences(Base.metadata) == []


def test_the_comparison_can_fail() -> None:
    extra = MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(extra)
    Table("not_migrated", extra, Column("id", Integer, primary_key=True))
    assert any("not_migrated" in str(diff) for diff in _differences(extra))
