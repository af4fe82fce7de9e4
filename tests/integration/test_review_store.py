"""The case store on a real database, SQLite and PostgreSQL alike: idempotent intake,
queue order, claims and leases (two reviewers never hold one case), verdicts into the
outbox, four eyes, chargebacks, list requests, logins."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from fraudstream.contracts import Action, Label, LabelSource, Verdict
from fraudstream.review import auth, chargebacks, lists
from fraudstream.review.auth import AuthError, Principal, Role
from fraudstream.review.database import current_revision, head_revision
from fraudstream.review.schema import AuditEntry, OutboxLabel, Session, User
from fraudstream.review.store import CaseError, CaseStore
from fraudstream.review.triage import Queue, ReviewVerdict, Status
from fraudstream.rules.model import ListEntity, ListName
from tests.factories import NOW
from tests.integration.review_support import StoreFactory, later, review_case, rule_reason

ANN = Principal("ann", Role.ANALYST, "csrf-ann")
BOB = Principal("bob", Role.ANALYST, "csrf-bob")
LEA = Principal("lea", Role.LEAD, "csrf-lea")
LIZ = Principal("liz", Role.LEAD, "csrf-liz")


@pytest.fixture
def store(store_factory: StoreFactory) -> CaseStore:
    return store_factory()


def outbox(store: CaseStore) -> list[OutboxLabel]:
    with store.sessions() as db:
        return list(db.scalars(select(OutboxLabel).order_by(OutboxLabel.id)))


def actions(store: CaseStore, tx_id: str) -> list[str]:
    with store.sessions() as db:
        query = select(AuditEntry.action).where(AuditEntry.transaction_id == tx_id)
        return list(db.scalars(query.order_by(AuditEntry.id)))


def test_schema_is_migrated_and_intake_is_idempotent(store: CaseStore) -> None:
    assert current_revision(store.engine) == head_revision()
    cases = [review_case(f"tx-{i}", amount=10.0 * (i + 1)) for i in range(5)]
    assert store.ingest(cases, NOW) == 5
    assert store.ingest([*cases, review_case("tx-new")], NOW) == 1  # a replay adds nothing
    found = store.get("tx-2")
    assert found is not None
    assert found.amount == 30.0
    assert found.event_time == NOW  # aware UTC out, as it went in
    assert found.expected_loss == pytest.approx(0.6 * 30.0)
    assert found.payload["transaction"]["transaction_id"] == "tx-2"
    assert store.summary(NOW).depth == 6


def test_queues_by_amount_and_reason_and_priority_order(store: CaseStore) -> None:
    store.ingest(
        [
            review_case("small", amount=50, score=0.9),
            review_case("big-loss", amount=900, score=0.9),
            review_case("rule-hit", amount=20, reasons=[rule_reason()]),
            review_case("high-value", amount=5000, score=0.2),
            review_case(
                "old", amount=10, score=0.5, created_at=NOW - timedelta(hours=3, minutes=50)
            ),
        ],
        NOW,
    )
    assert store.get("high-value").queue == Queue.HIGH_VALUE  # type: ignore[union-attr]
    assert store.get("rule-hit").queue == Queue.RULES  # type: ignore[union-attr]
    assert store.get("small").queue == Queue.STANDARD  # type: ignore[union-attr]
    order = [c.transaction_id for c in store.queue(NOW, ANN)]
    # "old" is due in 10 minutes (inside the urgent window): first; then by expected loss.
    assert order == ["old", "high-value", "big-loss", "small", "rule-hit"]
    by_amount = [c.transaction_id for c in store.queue(NOW, ANN, sort="amount")]
    assert by_amount[0] == "high-value"
    assert [c.transaction_id for c in store.queue(NOW, ANN, queue=Queue.RULES)] == ["rule-hit"]
    assert [c.transaction_id for c in store.queue(NOW, ANN, min_amount=800)] == [
        "high-value",
        "big-loss",
    ]
    summary = store.summary(NOW)
    assert summary.queues[Queue.STANDARD].open == 3
    assert summary.queues[Queue.HIGH_VALUE].oldest == NOW


def test_two_reviewers_never_hold_the_same_case(store_factory: StoreFactory) -> None:
    """Reviewers on separate store instances (separate connection pools) race for one
    case, many times: exactly one claim wins each race."""
    setup = store_factory()
    setup.ingest([review_case(f"race-{i}") for i in range(20)], NOW)
    stores = [store_factory(), store_factory()]
    people = [ANN, BOB]

    def grab(
        who: int, tx_id: str, barrier: threading.Barrier, wins: list[str], refusals: list[str]
    ) -> None:
        barrier.wait()
        try:
            stores[who].claim(tx_id, people[who], NOW)
            wins.append(people[who].username)
        except CaseError as exc:
            refusals.append(str(exc))

    for i in range(20):
        wins: list[str] = []
        refusals: list[str] = []
        barrier = threading.Barrier(2)
        threads = [
            threading.Thread(target=grab, args=(n, f"race-{i}", barrier, wins, refusals))
            for n in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(wins) == 1, f"race {i}: {wins}"
        assert len(refusals) == 1
        assert "holds this case" in refusals[0]
        holder = setup.get(f"race-{i}")
        assert holder is not None
        assert holder.claimed_by == wins[0]


def test_a_lease_lapses_and_next_case_skips_held_ones(store: CaseStore) -> None:
    store.ingest([review_case("a", amount=500), review_case("b", amount=100)], NOW)
    first = store.next_case(ANN, NOW)
    assert first is not None
    assert first.transaction_id == "a"
    assert store.next_case(ANN, NOW).transaction_id == "a"  # type: ignore[union-attr]
    second = store.next_case(BOB, NOW)
    assert second is not None
    assert second.transaction_id == "b"
    with pytest.raises(CaseError, match="ann holds this case"):
        store.claim("a", BOB, later(5))
    # No activity from ann for the lease (10 min): bob may take it.
    assert store.claim("a", BOB, later(11)).claimed_by == "bob"
    with pytest.raises(CaseError, match="bob holds this case"):
        store.decide("a", ANN, ReviewVerdict.FRAUD, "", later(12))
    store.release("b", BOB, later(12))
    assert store.next_case(ANN, later(12)).transaction_id == "b"  # type: ignore[union-attr]


def test_a_verdict_queues_exactly_one_label(store: CaseStore) -> None:
    store.ingest([review_case("tx", amount=80, score=0.7, device_id="dev-9")], NOW)
    store.claim("tx", ANN, NOW)
    outcome = store.decide("tx", ANN, ReviewVerdict.FRAUD, "card testing pattern", later(2))
    assert outcome.status is Status.DECIDED
    assert not outcome.override
    assert outcome.seconds_to_decide == pytest.approx(120)
    with pytest.raises(CaseError, match="already decided by ann"):
        store.decide("tx", ANN, ReviewVerdict.LEGIT, "changed my mind", later(3))
    rows = outbox(store)
    assert len(rows) == 1
    label = Label.model_validate(rows[0].label, strict=False)
    assert (label.verdict, label.source, label.actor) == (
        Verdict.FRAUD,
        LabelSource.REVIEWER,
        "ann",
    )
    assert label.merchant_id == "merch-1"
    assert label.device_id == "dev-9"
    assert label.event_time == NOW
    assert actions(store, "tx") == ["claim", "verdict"]


def test_overrides_need_a_note_and_declined_approvals_need_a_second_person(
    store: CaseStore,
) -> None:
    store.ingest([review_case("declined", score=0.95, action=Action.DECLINE)], NOW)
    store.claim("declined", ANN, NOW)
    with pytest.raises(CaseError, match="add a note"):
        store.decide("declined", ANN, ReviewVerdict.LEGIT, "  ", NOW)
    outcome = store.decide("declined", ANN, ReviewVerdict.LEGIT, "customer confirmed", NOW)
    assert outcome.override
    assert outcome.status is Status.PENDING_APPROVAL
    assert outbox(store) == []
    with pytest.raises(CaseError, match="leads and admins"):
        store.approve("declined", BOB, True, NOW)
    store.ingest([review_case("lead-own", score=0.95, action=Action.DECLINE)], NOW)
    store.claim("lead-own", LEA, NOW)
    store.decide("lead-own", LEA, ReviewVerdict.LEGIT, "known customer", NOW)
    with pytest.raises(CaseError, match="second person"):
        store.approve("lead-own", LEA, True, NOW)
    assert store.approve("declined", LEA, True, later(1)).status is Status.DECIDED
    assert [r.transaction_id for r in outbox(store)] == ["declined"]
    assert Label.model_validate(outbox(store)[0].label, strict=False).actor == "ann"
    refused = store.approve("lead-own", LIZ, False, later(1))
    assert refused.status is Status.OPEN
    assert [c.transaction_id for c in store.pending_approvals()] == []


def test_unsure_escalates_to_leads_and_snooze_hides(store: CaseStore) -> None:
    store.ingest([review_case("hard"), review_case("later")], NOW)
    store.claim("hard", ANN, NOW)
    store.decide("hard", ANN, ReviewVerdict.UNSURE, "merchant pattern I do not know", NOW)
    assert [c.transaction_id for c in store.queue(NOW, ANN)] == ["later"]
    with pytest.raises(CaseError, match="leads and admins"):
        store.claim("hard", ANN, NOW)
    lead_view = [c.transaction_id for c in store.queue(NOW, LEA)]
    assert "hard" in lead_view
    escalated = store.claim("hard", LEA, NOW)
    assert escalated.queue == Queue.ESCALATION
    assert escalated.escalation_note == "merchant pattern I do not know"
    store.claim("later", BOB, NOW)
    with pytest.raises(CaseError, match="next 7 days"):
        store.snooze("later", BOB, NOW + timedelta(days=8), NOW)
    store.snooze("later", BOB, later(60), NOW)
    assert "later" not in [c.transaction_id for c in store.queue(later(30), BOB)]
    assert "later" in [c.transaction_id for c in store.queue(later(61), BOB)]
    assert store.summary(later(30)).snoozed == 1


def test_leads_decide_in_bulk_but_not_cases_others_hold(store: CaseStore) -> None:
    store.ingest([review_case(f"b-{i}") for i in range(3)], NOW)
    store.claim("b-2", ANN, NOW)
    with pytest.raises(CaseError, match="claim the case first"):
        store.decide("b-0", BOB, ReviewVerdict.FRAUD, "", NOW, bulk=True)
    for tx_id in ("b-0", "b-1"):
        assert (
            store.decide(tx_id, LEA, ReviewVerdict.FRAUD, "", NOW, bulk=True).status
            is Status.DECIDED
        )
    with pytest.raises(CaseError, match="ann holds this case"):
        store.decide("b-2", LEA, ReviewVerdict.FRAUD, "", NOW, bulk=True)
    assert len(outbox(store)) == 2
    assert actions(store, "b-0") == ["bulk_verdict"]


def test_chargebacks_become_labels_once(store: CaseStore, tmp_path: Path) -> None:
    store.ingest([review_case("disputed", merchant_id="merch-7")], NOW)
    path = tmp_path / "chargebacks.csv"
    path.write_text(
        "transaction_id,card_token,event_time,reason\n"
        "disputed,,,10.4 fraud\n"
        "unreviewed,card-0099,2026-11-20T10:00:00+00:00,\n"
        ",card-1,,\n"
        "bad-time,card-2,yesterday,\n"
    )
    result = chargebacks.import_file(store, path, "issuer-feed", NOW)
    assert (result.queued, result.duplicates) == (2, 0)
    assert [line.split(":")[0] for line in result.invalid] == ["line 4", "line 5"]
    again = chargebacks.import_file(store, path, "issuer-feed", later(1))
    assert (again.queued, again.duplicates) == (0, 2)
    labels = {r.transaction_id: Label.model_validate(r.label, strict=False) for r in outbox(store)}
    assert labels["disputed"].merchant_id == "merch-7"  # taken from the case
    assert labels["disputed"].source is LabelSource.CHARGEBACK
    assert labels["unreviewed"].card_token == "card-0099"
    assert store.get("disputed").status == Status.DECIDED  # type: ignore[union-attr]


def test_list_changes_need_a_second_person(store: CaseStore) -> None:
    store.ingest([review_case("listed", device_id="dev-evil")], NOW)
    applied: list[tuple[ListName, ListEntity, str]] = []
    request = lists.request_change(
        store,
        "listed",
        ANN,
        name=ListName.BLOCK,
        entity=ListEntity.DEVICE,
        reason="device farm",
        now=NOW,
    )
    assert request.value == "dev-evil"
    with pytest.raises(CaseError, match="leads and admins"):
        lists.decide_change(
            store, request.id, BOB, approve=True, apply=lambda *a: applied.append(a), now=NOW
        )
    assert applied == []
    lead_request = lists.request_change(
        store, "listed", LEA, name=ListName.BLOCK, entity=ListEntity.IP, reason="proxy", now=NOW
    )
    with pytest.raises(CaseError, match="second person"):
        lists.decide_change(
            store, lead_request.id, LEA, approve=True, apply=lambda *a: applied.append(a), now=NOW
        )
    done = lists.decide_change(
        store, request.id, LEA, approve=True, apply=lambda *a: applied.append(a), now=NOW
    )
    assert done.status == "approved"
    assert applied == [(ListName.BLOCK, ListEntity.DEVICE, "dev-evil")]
    with pytest.raises(CaseError, match="not pending"):
        lists.decide_change(
            store, request.id, LIZ, approve=True, apply=lambda *a: applied.append(a), now=NOW
        )
    assert [r.id for r in lists.pending(store)] == [lead_request.id]
    assert Counter(actions(store, "listed")) == {"list_request": 2, "list_approve": 1}


def test_passwords_lockout_and_sessions(store: CaseStore) -> None:
    with store.sessions.begin() as db:
        auth.create_user(db, "ann", Role.ANALYST, "a long enough secret", NOW)
        with pytest.raises(AuthError, match="exists"):
            auth.create_user(db, "ann", Role.ANALYST, "a long enough secret", NOW)
        with pytest.raises(AuthError, match="12-256"):
            auth.create_user(db, "short", Role.ANALYST, "tiny", NOW)

    def attempt(password: str, at: object = NOW) -> str:
        with store.sessions.begin() as db:
            try:
                user = auth.authenticate(db, "ann", password, at, max_failures=3, lockout_s=600)  # type: ignore[arg-type]
            except AuthError as exc:
                return str(exc)
            return auth.open_session(db, user, at)  # type: ignore[arg-type]

    refused = attempt("wrong")
    assert "wrong username or password" in refused
    token = attempt("a long enough secret")
    assert len(token) >= 40
    with store.sessions.begin() as db:
        stored = db.get(User, "ann")
        assert stored is not None
        assert stored.password_hash.startswith("$argon2id$")
        assert "a long enough secret" not in stored.password_hash
        found = auth.resolve_session(db, token, later(29), idle_s=1800, max_s=43200)
        assert found is not None
        assert found.role is Role.ANALYST
        assert auth.resolve_session(db, token, later(60), idle_s=1800, max_s=43200) is None
    for _ in range(3):
        assert "wrong" in attempt("nope")
    # Locked: even the right password is refused, with the same message, until it lapses.
    assert attempt("a long enough secret") == refused
    assert len(attempt("a long enough secret", later(11))) >= 40
    with store.sessions() as db:
        assert db.scalar(select(func.count()).select_from(Session)) == 1


def test_card_numbers_in_notes_are_masked_before_they_are_stored_or_sent(
    store: CaseStore,
) -> None:
    store.ingest([review_case("pan-note", score=0.2), review_case("pan-esc")], NOW)
    store.claim("pan-note", ANN, NOW)
    store.decide("pan-note", ANN, ReviewVerdict.FRAUD, "customer read 4111 1111 1111 1111", NOW)
    (row,) = outbox(store)
    assert "4111 1111 1111 1111" not in str(row.label)
    assert "411111******1111" in row.label["note"]
    store.claim("pan-esc", ANN, NOW)
    store.escalate("pan-esc", ANN, "card 5500005555555559 again", NOW)
    escalated = store.get("pan-esc")
    assert escalated is not None
    assert "5500005555555559" not in escalated.escalation_note
    with store.sessions() as db:
        trail = " ".join(str(e.detail) for e in db.scalars(select(AuditEntry)))
    assert "4111 1111 1111 1111" not in trail
    assert "5500005555555559" not in trail


def test_escalation_keeps_an_earlier_due_time(store: CaseStore) -> None:
    old = NOW - timedelta(hours=5)  # standard SLA 4 h: overdue by an hour
    store.ingest([review_case("late", created_at=old)], NOW)
    store.claim("late", ANN, NOW)
    store.escalate("late", ANN, "odd pattern", NOW)
    escalated = store.get("late")
    assert escalated is not None
    assert escalated.due_at == old + timedelta(hours=4)  # still overdue, not reset


def test_next_case_looks_past_cases_others_hold(store: CaseStore) -> None:
    store.ingest([review_case(f"h-{i:02}", amount=1000.0 - i) for i in range(30)], NOW)
    store.ingest([review_case("free", amount=1.0)], NOW)
    for i in range(30):
        store.claim(f"h-{i:02}", BOB, NOW)
    found = store.next_case(ANN, NOW)
    assert found is not None
    assert found.transaction_id == "free"
