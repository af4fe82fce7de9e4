"""The case store: intake, the queue, claims with a lease, verdicts into the outbox.

Every change is one database transaction. A claim is a conditional UPDATE (the case is
open and nobody else holds a live lease), so two reviewers can never hold one case, on
SQLite and PostgreSQL alike. A verdict, its label in the outbox and its audit entry commit
together; the relay (outbox.py) produces the label afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, case, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from fraudstream.contracts import Label, LabelSource, ReviewCase, Verdict
from fraudstream.contracts.fields import mask_pans
from fraudstream.errors import FraudStreamError
from fraudstream.review import auth, triage
from fraudstream.review.auth import Principal, Role
from fraudstream.review.schema import AuditEntry, Case, OutboxLabel, RejectedRecord, UtcDateTime
from fraudstream.review.settings import ReviewSettings
from fraudstream.review.triage import Queue, ReviewVerdict, Status

MAX_NOTE = 1024  # Label.note
MAX_SNOOZE = timedelta(days=7)


class CaseError(FraudStreamError):
    """A case action that cannot be done now (the message says why, for the reviewer)."""


@dataclass(frozen=True)
class Rules:
    """The store's knobs, from `ReviewSettings`."""

    lease: timedelta
    urgent: timedelta
    high_value_amount: float
    sla_s: dict[str, float]

    @classmethod
    def from_settings(cls, settings: ReviewSettings) -> Rules:
        return cls(
            timedelta(seconds=settings.review_lease_s),
            timedelta(seconds=settings.review_urgent_s),
            settings.review_high_value_amount,
            settings.sla_seconds(),
        )


@dataclass(frozen=True)
class Outcome:
    """What a verdict did: decided (a label is on its way), sent for approval or escalated."""

    transaction_id: str
    status: Status
    verdict: ReviewVerdict
    override: bool
    seconds_to_decide: float | None  # from the reviewer's claim; None in bulk
    queue: str
    overdue: bool  # decided after the case's SLA


@dataclass(frozen=True)
class QueueStats:
    open: int  # open and awake (not snoozed)
    oldest: datetime | None  # creation time of the oldest of them
    overdue: int  # of them, past their SLA


@dataclass(frozen=True)
class Summary:
    """The backlog at a glance: for the metrics, the queue tabs and `fraudctl review status`."""

    queues: dict[str, QueueStats]
    snoozed: int
    pending_approvals: int
    outbox_pending: int
    decided: int

    @property
    def depth(self) -> int:
        return sum(q.open for q in self.queues.values())


def clean_note(text: str) -> str:
    """A reviewer's free text as stored and sent on: trimmed, at most `MAX_NOTE`
    characters, and any card number in it masked to first-6/last-4 (never stored raw)."""
    masked, _found = mask_pans(text.strip().encode())
    return masked.decode()[:MAX_NOTE]


def insert_ignoring_duplicates(db: DbSession, table: Any, rows: list[dict[str, Any]]) -> int:
    """INSERT ... ON CONFLICT DO NOTHING on SQLite or PostgreSQL; returns rows inserted
    (counted from RETURNING: a driver's rowcount of a multi-row insert is not reliable)."""
    if not rows:
        return 0
    dialect = postgresql if db.get_bind().dialect.name == "postgresql" else sqlite
    key = next(iter(table.primary_key.columns))
    statement = dialect.insert(table).on_conflict_do_nothing().returning(key)
    return len(db.execute(statement, rows).all())


class CaseStore:
    """Cases and their review, over one engine."""

    def __init__(self, engine: Engine, rules: Rules) -> None:
        self.engine = engine
        self.rules = rules
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    def close(self) -> None:
        """Close the engine's pooled connections."""
        self.engine.dispose()

    # -- intake ---------------------------------------------------------------------------

    def ingest(self, cases: Sequence[ReviewCase], now: datetime) -> int:
        """Add cases not seen before (idempotent per transaction id); returns how many."""
        rows = []
        for found in cases:
            tx = found.transaction
            sorted_as = triage.triage(found, self.rules.high_value_amount, self.rules.sla_s)
            rows.append(
                {
                    "transaction_id": tx.transaction_id,
                    "card_token": tx.card_token,
                    "merchant_id": tx.merchant_id,
                    "device_id": tx.device_id,
                    "ip": tx.ip,
                    "amount": float(tx.amount),
                    "currency": tx.currency,
                    "event_time": tx.event_time,
                    "score": found.score,
                    "action_suggested": found.action_suggested.value,
                    "path": found.path.value,
                    "model_version": found.model_version,
                    "payload": found.model_dump(mode="json"),
                    "created_at": found.created_at,
                    "ingested_at": now,
                    "queue": sorted_as.queue.value,
                    "expected_loss": sorted_as.expected_loss,
                    "due_at": sorted_as.due_at,
                    "status": Status.OPEN.value,
                    "verdict_note": "",
                    "escalation_note": "",
                }
            )
        with self.sessions.begin() as db:
            return insert_ignoring_duplicates(db, Case.__table__, rows)

    def reject(self, records: Iterable[dict[str, Any]]) -> int:
        """Keep records that failed their contract (topic, partition, offset, reason,
        detail, raw, at); a record read twice is kept once."""
        with self.sessions.begin() as db:
            return insert_ignoring_duplicates(db, RejectedRecord.__table__, list(records))

    # -- reading --------------------------------------------------------------------------

    def get(self, transaction_id: str) -> Case | None:
        with self.sessions() as db:
            return db.get(Case, transaction_id)

    def queue(
        self,
        now: datetime,
        principal: Principal,
        *,
        queue: str | None = None,
        min_amount: float | None = None,
        sort: str = "priority",
        limit: int = 200,
        claimable: bool = False,
    ) -> list[Case]:
        """Open, unsnoozed cases in priority order: those due within the urgent window (or
        overdue) first by due time, then by expected loss. Escalations are for leads.
        `claimable`: only those nobody else holds."""
        query = select(Case).where(Case.status == Status.OPEN.value, _awake(now))
        if claimable:
            query = query.where(_free_for(principal.username, now))
        if queue:
            query = query.where(Case.queue == queue)
        if not principal.at_least(Role.LEAD):
            query = query.where(Case.queue != Queue.ESCALATION.value)
        if min_amount is not None:
            query = query.where(Case.amount >= min_amount)
        with self.sessions() as db:
            return list(db.scalars(query.order_by(*self._order(now, sort)).limit(limit)))

    def _order(self, now: datetime, sort: str) -> list[Any]:
        if sort == "amount":
            return [Case.amount.desc(), Case.due_at]
        if sort == "age":
            return [Case.created_at, Case.transaction_id]
        urgent = case((Case.due_at <= now + self.rules.urgent, 0), else_=1)
        return [
            urgent,
            case((Case.due_at <= now + self.rules.urgent, Case.due_at), else_=None),
            Case.expected_loss.desc(),
            Case.due_at,
            Case.transaction_id,
        ]

    def related(self, found: Case, limit: int = 20) -> dict[str, list[Case]]:
        """The card's other cases, other cases on the same merchant, and cases of other
        cards seen on the same device or IP (the linked entities of the case page)."""
        others = Case.transaction_id != found.transaction_id
        with self.sessions() as db:

            def pick(*where: Any) -> list[Case]:
                query = select(Case).where(others, *where).order_by(Case.event_time.desc())
                return list(db.scalars(query.limit(limit)))

            shared = [Case.device_id == found.device_id] if found.device_id else []
            shared += [Case.ip == found.ip] if found.ip else []
            return {
                "card": pick(Case.card_token == found.card_token),
                "merchant": pick(Case.merchant_id == found.merchant_id),
                "shared": pick(or_(*shared), Case.card_token != found.card_token) if shared else [],
            }

    def has_users(self) -> bool:
        with self.sessions() as db:
            return auth.has_users(db)

    def summary(self, now: datetime) -> Summary:
        """Open cases per queue (with the oldest and the overdue), snoozed, waiting for
        approval, decided, and labels not yet relayed: a few aggregate queries."""
        is_open = Case.status == Status.OPEN.value
        with self.sessions() as db:
            rows: Sequence[Any] = db.execute(
                select(
                    Case.queue,
                    func.count(),
                    func.min(Case.created_at),
                    func.sum(case((Case.due_at < now, 1), else_=0)),
                )
                .where(is_open, _awake(now))
                .group_by(Case.queue)
            ).all()
            by_status = dict(
                db.execute(select(Case.status, func.count()).group_by(Case.status)).all()
            )
            snoozed = db.scalar(select(func.count()).where(is_open, ~_awake(now))) or 0
            outbox = db.scalar(select(func.count()).where(OutboxLabel.sent_at.is_(None))) or 0
        found = {
            q: QueueStats(int(n), _aware(oldest), int(late or 0)) for q, n, oldest, late in rows
        }
        return Summary(
            queues={q.value: found.get(q.value, QueueStats(0, None, 0)) for q in Queue},
            snoozed=int(snoozed),
            pending_approvals=int(by_status.get(Status.PENDING_APPROVAL.value, 0)),
            outbox_pending=int(outbox),
            decided=int(by_status.get(Status.DECIDED.value, 0)),
        )

    # -- claims ---------------------------------------------------------------------------

    def claim(self, transaction_id: str, principal: Principal, now: datetime) -> Case:
        """Take (or renew) the lease on an open case; `CaseError` when someone else holds
        it, it is decided, or it is an escalation and the user is not a lead."""
        allowed = [
            Case.transaction_id == transaction_id,
            Case.status == Status.OPEN.value,
            _free_for(principal.username, now),
        ]
        if not principal.at_least(Role.LEAD):
            allowed.append(Case.queue != Queue.ESCALATION.value)
        with self.sessions.begin() as db:
            renewing = _holds(principal.username, now)
            result = db.execute(
                update(Case)
                .where(*allowed)
                .values(
                    claimed_by=principal.username,
                    lease_until=now + self.rules.lease,
                    claimed_at=case((renewing, Case.claimed_at), else_=now),
                )
                .execution_options(synchronize_session=False)
            )
            found = db.get(Case, transaction_id, populate_existing=True)
            if result.rowcount != 1 or found is None:  # type: ignore[attr-defined]
                raise CaseError(_why_not(found, principal, now))
            _audit(db, principal.username, "claim", transaction_id, now)
            return found

    def release(self, transaction_id: str, principal: Principal, now: datetime) -> None:
        """Give a held case back to the queue."""
        with self.sessions.begin() as db:
            db.execute(
                update(Case)
                .where(Case.transaction_id == transaction_id, Case.claimed_by == principal.username)
                .values(claimed_by=None, lease_until=None, claimed_at=None)
            )
            _audit(db, principal.username, "release", transaction_id, now)

    def next_case(
        self, principal: Principal, now: datetime, queue: str | None = None
    ) -> Case | None:
        """The case to work next: one the user already holds, else the top claimable one
        (claimed here; a case another reviewer takes meanwhile is skipped)."""
        with self.sessions() as db:
            held = db.scalars(
                select(Case)
                .where(Case.status == Status.OPEN.value, _holds(principal.username, now))
                .limit(1)
            ).first()
        if held is not None:
            return self.claim(held.transaction_id, principal, now)
        for candidate in self.queue(now, principal, queue=queue, limit=25, claimable=True):
            try:
                return self.claim(candidate.transaction_id, principal, now)
            except CaseError:
                continue
        return None

    def snooze(
        self, transaction_id: str, principal: Principal, until: datetime, now: datetime
    ) -> None:
        """Hide a held case from the queue until `until` (at most 7 days), releasing it."""
        if not now < until <= now + MAX_SNOOZE:
            raise CaseError("snooze until a time in the next 7 days")
        self._held_update(
            transaction_id,
            principal,
            now,
            "snooze",
            {"until": until.isoformat()},
            snoozed_until=until,
            claimed_by=None,
            lease_until=None,
        )

    def escalate(self, transaction_id: str, principal: Principal, note: str, now: datetime) -> None:
        """Send a held case to the escalation queue with a note, releasing it; it stays due
        when it was (or within the escalation SLA, if sooner)."""
        note = clean_note(note)
        if not note:
            raise CaseError("say why you escalate (a note is required)")
        sla_due = now + timedelta(seconds=self.rules.sla_s[Queue.ESCALATION.value])
        due = case((Case.due_at < sla_due, Case.due_at), else_=literal(sla_due, UtcDateTime()))
        self._held_update(
            transaction_id,
            principal,
            now,
            "escalate",
            {"note": note},
            queue=Queue.ESCALATION.value,
            due_at=due,
            claimed_by=None,
            lease_until=None,
            escalation_note=note,
        )

    def _held_update(
        self,
        transaction_id: str,
        principal: Principal,
        now: datetime,
        action: str,
        detail: dict[str, Any],
        **values: Any,
    ) -> None:
        with self.sessions.begin() as db:
            result = db.execute(
                update(Case)
                .where(
                    Case.transaction_id == transaction_id,
                    Case.status == Status.OPEN.value,
                    _holds(principal.username, now),
                )
                .values(**values)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise CaseError(_why_not(db.get(Case, transaction_id), principal, now))
            _audit(db, principal.username, action, transaction_id, now, detail)

    # -- verdicts -------------------------------------------------------------------------

    def decide(
        self,
        transaction_id: str,
        principal: Principal,
        verdict: ReviewVerdict,
        note: str,
        now: datetime,
        *,
        bulk: bool = False,
    ) -> Outcome:
        """Record a verdict on a case the user holds (leads in bulk: on any open case
        nobody else holds). Fraud or legit queue one label; an override of the model needs
        a note; approving a declined case waits for a second person; unsure escalates."""
        note = clean_note(note)
        if verdict is ReviewVerdict.UNSURE:
            self.escalate(transaction_id, principal, note or "unsure", now)
            return Outcome(
                transaction_id, Status.OPEN, verdict, False, None, Queue.ESCALATION.value, False
            )
        with self.sessions.begin() as db:
            found = db.get(Case, transaction_id, with_for_update=True)
            if found is None or found.status != Status.OPEN.value:
                raise CaseError(_why_not(found, principal, now))
            override = triage.is_override(verdict, found.action_suggested, found.score)
            if override and not note:
                raise CaseError("this verdict overrides the model: add a note saying why")
            held = found.claimed_by == principal.username and _live(found, now)
            if not held and not (
                bulk
                and principal.at_least(Role.LEAD)
                and not _held_by_other(found, principal.username, now)
            ):
                raise CaseError(_why_not(found, principal, now))
            pending = triage.needs_second_approval(verdict, found.action_suggested)
            status = Status.PENDING_APPROVAL if pending else Status.DECIDED
            guard = db.execute(
                update(Case)
                .where(
                    Case.transaction_id == transaction_id,
                    Case.status == Status.OPEN.value,
                    # Still held (or, in bulk, still free): a claim taken meanwhile wins.
                    _holds(principal.username, now) if held else _free_for(principal.username, now),
                )
                .values(
                    status=status.value,
                    verdict=verdict.value,
                    verdict_by=principal.username,
                    verdict_at=now,
                    verdict_note=note,
                    claimed_by=None,
                    lease_until=None,
                    claimed_at=found.claimed_at if held else None,  # times the decider only
                )
                .execution_options(synchronize_session=False)
            )
            if guard.rowcount != 1:  # type: ignore[attr-defined]
                raise CaseError("the case changed meanwhile; reload it")
            if not pending and not queue_label(
                db, label_for(found, verdict, principal.username, note, now), now
            ):
                raise CaseError("a reviewer label for this transaction exists already")
            _audit(
                db,
                principal.username,
                "bulk_verdict" if bulk else "verdict",
                transaction_id,
                now,
                {
                    "verdict": verdict.value,
                    "override": override,
                    "note": note,
                    "status": status.value,
                },
            )
            took = (now - found.claimed_at).total_seconds() if found.claimed_at and held else None
            return Outcome(
                transaction_id, status, verdict, override, took, found.queue, now > found.due_at
            )

    def approve(
        self, transaction_id: str, principal: Principal, approve: bool, now: datetime
    ) -> Outcome:
        """A lead's second look at a verdict waiting for approval (not their own): approved,
        its label is queued; refused, the case goes back to the queue."""
        if not principal.at_least(Role.LEAD):
            raise CaseError("approvals are for leads and admins")
        with self.sessions.begin() as db:
            found = db.get(Case, transaction_id, with_for_update=True)
            if found is None or found.status != Status.PENDING_APPROVAL.value:
                raise CaseError("this case is not waiting for an approval")
            if found.verdict_by == principal.username:
                raise CaseError("a second person must approve your own verdict")
            verdict = ReviewVerdict(found.verdict or ReviewVerdict.LEGIT.value)
            values: dict[str, Any] = (
                {"status": Status.DECIDED.value, "approved_by": principal.username} if approve
                else {"status": Status.OPEN.value, "verdict": None, "verdict_by": None}
            )  # fmt: skip
            guard = db.execute(
                update(Case)
                .where(Case.transaction_id == transaction_id,
                       Case.status == Status.PENDING_APPROVAL.value)
                .values(**values)
                .execution_options(synchronize_session=False)
            )  # fmt: skip
            if guard.rowcount != 1:  # type: ignore[attr-defined]
                raise CaseError("another lead decided this approval meanwhile; reload")
            found.status = values["status"]
            if approve:
                label = label_for(
                    found, verdict, found.verdict_by or principal.username, found.verdict_note, now
                )
                if not queue_label(db, label, now):
                    raise CaseError("a reviewer label for this transaction exists already")
            _audit(
                db,
                principal.username,
                "approve" if approve else "refuse_approval",
                transaction_id,
                now,
                {"verdict": verdict.value},
            )
            return Outcome(
                transaction_id,
                Status(found.status),
                verdict,
                False,
                None,
                found.queue,
                now > found.due_at,
            )

    def pending_approvals(self) -> list[Case]:
        with self.sessions() as db:
            query = select(Case).where(Case.status == Status.PENDING_APPROVAL.value)
            return list(db.scalars(query.order_by(Case.verdict_at)))

    def view(self, transaction_id: str, principal: Principal, now: datetime) -> Case | None:
        """A case for its page, the view audited (and the holder's lease renewed)."""
        with self.sessions.begin() as db:
            found = db.get(Case, transaction_id)
            if found is None:
                return None
            if found.queue == Queue.ESCALATION.value and not principal.at_least(Role.LEAD):
                raise CaseError("escalated cases are for leads and admins")
            if found.claimed_by == principal.username and _live(found, now):
                found.lease_until = now + self.rules.lease
            _audit(db, principal.username, "view", transaction_id, now)
            return found


def label_for(found: Case, verdict: ReviewVerdict, actor: str, note: str, now: datetime) -> Label:
    """The `fraud.labels` record of a reviewer's verdict on a case."""
    return Label(
        transaction_id=found.transaction_id,
        verdict=Verdict(verdict.value),
        source=LabelSource.REVIEWER,
        actor=actor,
        labelled_at=now,
        card_token=found.card_token,
        merchant_id=found.merchant_id,
        event_time=found.event_time,
        device_id=found.device_id,
        ip=found.ip,
        note=note[:MAX_NOTE],
    )


def queue_label(db: DbSession, label: Label, now: datetime) -> bool:
    """Put a label in the outbox in the caller's transaction; False when one from the same
    source for this transaction is there already."""
    row = {
        "transaction_id": label.transaction_id,
        "source": label.source.value,
        "label": label.model_dump(mode="json"),
        "created_at": now,
    }
    return insert_ignoring_duplicates(db, OutboxLabel.__table__, [row]) == 1


def audit(  # noqa: PLR0917 - reads as the log line it writes
    db: DbSession,
    actor: str,
    action: str,
    transaction_id: str | None,
    now: datetime,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append to the audit log in the caller's transaction."""
    db.add(
        AuditEntry(
            at=now, actor=actor, action=action, transaction_id=transaction_id, detail=detail or {}
        )
    )


_audit = audit


def _aware(value: Any) -> datetime | None:
    """Aggregates bypass the column type: SQLite gives back naive UTC (or a string)."""
    if value is None or (isinstance(value, datetime) and value.tzinfo is not None):
        return value
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return parsed.replace(tzinfo=UTC)


def _awake(now: datetime) -> Any:
    return or_(Case.snoozed_until.is_(None), Case.snoozed_until <= now)


def _holds(username: str, now: datetime) -> Any:
    return and_(Case.claimed_by == username, Case.lease_until > now)


def _free_for(username: str, now: datetime) -> Any:
    return or_(Case.claimed_by.is_(None), Case.lease_until <= now, Case.claimed_by == username)


def _live(found: Case, now: datetime) -> bool:
    return found.lease_until is not None and found.lease_until > now


def _held_by_other(found: Case, username: str, now: datetime) -> bool:
    return found.claimed_by not in (None, username) and _live(found, now)


def _why_not(found: Case | None, principal: Principal, now: datetime) -> str:  # noqa: PLR0911
    if found is None:
        return "no such case"
    if found.status == Status.DECIDED.value:
        return f"already decided by {found.verdict_by}"
    if found.status == Status.PENDING_APPROVAL.value:
        return f"waiting for a second approval of {found.verdict_by}'s verdict"
    if _held_by_other(found, principal.username, now):
        return f"{found.claimed_by} holds this case"
    if found.queue == Queue.ESCALATION.value and not principal.at_least(Role.LEAD):
        return "escalated cases are for leads and admins"
    if found.claimed_by != principal.username or not _live(found, now):
        return "claim the case first (your claim may have lapsed)"
    return "the case cannot be changed now"
