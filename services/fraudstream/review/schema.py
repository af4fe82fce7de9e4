"""The case store's tables (SQLAlchemy 2 ORM); `migrations/` creates and evolves them.

Times are stored as naive UTC (SQLite has no time zones) and come back aware (`UtcDateTime`).
Change a table here and add an Alembic revision in `migrations/versions/` in the same commit:
tests/unit/test_review_schema.py fails while the two disagree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ID = 128  # contracts.fields.MAX_ID_LENGTH


class UtcDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, naive UTC in the database."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the case store; pass an aware one")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UtcDateTime}  # noqa: RUF012 - SQLAlchemy's own API


class Case(Base):
    """One `fraud.review` case: its transaction, the model's view, and its review state."""

    __tablename__ = "cases"

    transaction_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    card_token: Mapped[str] = mapped_column(String(ID), index=True)
    merchant_id: Mapped[str] = mapped_column(String(ID), index=True)
    device_id: Mapped[str | None] = mapped_column(String(ID), index=True)
    ip: Mapped[str | None] = mapped_column(String(64), index=True)
    amount: Mapped[float] = mapped_column(Float)
    currency: Mapped[str] = mapped_column(String(3))
    event_time: Mapped[datetime]
    score: Mapped[float | None] = mapped_column(Float)
    action_suggested: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(16))
    model_version: Mapped[str | None] = mapped_column(String(ID))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)  # the ReviewCase as received
    created_at: Mapped[datetime]  # by the scorer
    ingested_at: Mapped[datetime]
    queue: Mapped[str] = mapped_column(String(32))
    expected_loss: Mapped[float] = mapped_column(Float)
    due_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(24), default="open")  # triage.Status
    claimed_by: Mapped[str | None] = mapped_column(String(ID))
    claimed_at: Mapped[datetime | None]
    lease_until: Mapped[datetime | None]
    snoozed_until: Mapped[datetime | None]
    verdict: Mapped[str | None] = mapped_column(String(16))
    verdict_by: Mapped[str | None] = mapped_column(String(ID))
    verdict_at: Mapped[datetime | None]
    verdict_note: Mapped[str] = mapped_column(Text, default="")
    approved_by: Mapped[str | None] = mapped_column(String(ID))
    escalation_note: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_cases_queue_open", "status", "queue", "due_at"),)


class User(Base):
    """A console user; passwords are argon2id hashes (auth.py)."""

    __tablename__ = "users"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16))  # auth.Role
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None]
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]


class Session(Base):
    """A logged-in browser: the cookie holds a random token, the table its SHA-256."""

    __tablename__ = "sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(ForeignKey("users.username"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    last_seen: Mapped[datetime]


class AuditEntry(Base):
    """Who did what to which case or list, when: views, claims, verdicts, list changes."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    transaction_id: Mapped[str | None] = mapped_column(String(ID), index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class OutboxLabel(Base):
    """A label to produce to `fraud.labels`, written in the transaction of its verdict.

    `sent_at` and the record's partition and offset are set once the relay knows the record
    is on the topic; (transaction_id, source) is unique, so a verdict or a chargeback file
    read twice still gives one label."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    transaction_id: Mapped[str] = mapped_column(String(ID))
    source: Mapped[str] = mapped_column(String(32))
    label: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None] = mapped_column(index=True)
    partition: Mapped[int | None] = mapped_column(Integer)
    offset: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (UniqueConstraint("transaction_id", "source", name="uq_outbox_tx_source"),)


class RelayPosition(Base):
    """Per partition of `fraud.labels`: the offset up to which the relay has matched the
    topic against the outbox (where a restart's read-back starts)."""

    __tablename__ = "relay_positions"

    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    offset: Mapped[int] = mapped_column(BigInteger)


class ListRequest(Base):
    """A block/allow list change asked from a case; applied once a second person approves."""

    __tablename__ = "list_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    transaction_id: Mapped[str | None] = mapped_column(String(ID))
    list_name: Mapped[str] = mapped_column(String(16))  # rules.model.ListName
    entity: Mapped[str] = mapped_column(String(16))  # rules.model.ListEntity
    value: Mapped[str] = mapped_column(String(ID))
    reason: Mapped[str] = mapped_column(Text, default="")
    requested_by: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16), default="pending")
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None]


class RejectedRecord(Base):
    """A `fraud.review` record that failed its contract, kept with the reason and its bytes
    (up to 64 KiB) so nothing that entered is lost silently."""

    __tablename__ = "rejected_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(256))
    partition: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("topic", "partition", "offset", name="uq_rejected_pos"),)
