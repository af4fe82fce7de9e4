"""The console and its API over HTTP (Starlette's TestClient) on a real case store: login
and lockout, sessions, CSRF, roles, escaping of hostile fields, bounded bodies, the
verdict flow and the metrics it feeds."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from fraudstream.contracts import Action
from fraudstream.review import auth, timeline
from fraudstream.review.auth import Role
from fraudstream.review.metrics import ReviewMetrics
from fraudstream.review.schema import AuditEntry, OutboxLabel, User
from fraudstream.review.store import CaseStore
from fraudstream.review.web.app import Console, create_app
from fraudstream.rules.model import ListEntity, ListName
from tests.integration.review_support import StoreFactory, review_case, rule_reason, settings_for

PASSWORD = "a long test password"
XSS = '<script>document.title="pwned"</script><img src=x onerror=alert(1)>'


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Setup:
    console: Console
    store: CaseStore
    clock: Clock
    registry: CollectorRegistry
    listed: list[tuple[ListName, ListEntity, str]]

    def client(self, username: str | None = None) -> TestClient:
        """A browser-like client (https, so the Secure cookie is sent), logged in as
        `username` when given."""
        client = TestClient(create_app(self.console), base_url="https://testserver")
        if username is not None:
            response = client.post("/login", data={"username": username, "password": PASSWORD},
                                   follow_redirects=False)  # fmt: skip
            assert response.status_code == 303, response.text
        return client


@pytest.fixture
def setup(review_db: str, tmp_path: Path, store_factory: StoreFactory) -> Setup:
    settings = settings_for(review_db, tmp_path, review_lockout_failures=3)
    store = store_factory()
    clock = Clock()
    registry = CollectorRegistry()
    listed: list[tuple[ListName, ListEntity, str]] = []
    console = Console(store=store, settings=settings, metrics=ReviewMetrics(registry),
                      apply_list=lambda *entry: listed.append(entry),
                      timeline=timeline.from_store(store), clock=clock,
                      rule_descriptions={"CARD_TESTING_BURST": "Many tiny payments"})  # fmt: skip
    with store.sessions.begin() as db:
        for name, role in (("ann", Role.ANALYST), ("bob", Role.ANALYST), ("lea", Role.LEAD),
                           ("root", Role.ADMIN)):  # fmt: skip
            auth.create_user(db, name, role, PASSWORD, clock.now)
    store.ingest([
        review_case("tx-big", amount=900, score=0.7, created_at=clock.now),
        review_case("tx-small", amount=30, score=0.4, created_at=clock.now,
                    reasons=[rule_reason(), rule_reason("ODD_CODE", detail=XSS)]),
        review_case("tx-declined", amount=60, score=0.97, action=Action.DECLINE,
                    created_at=clock.now),
    ], clock.now)  # fmt: skip
    return Setup(console, store, clock, registry, listed)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def test_pages_need_a_login_and_a_wrong_password_locks_the_account(setup: Setup) -> None:
    client = setup.client()
    page = client.get("/queue", follow_redirects=False)
    assert (page.status_code, page.headers["location"]) == (303, "/login")
    assert client.get("/api/v1/cases").status_code == 401
    for _ in range(3):
        refused = client.post("/login", data={"username": "ann", "password": "wrong password"})
        assert refused.status_code == 401
        assert "wrong username or password" in refused.text
    locked = client.post("/login", data={"username": "ann", "password": PASSWORD})
    assert locked.status_code == 401  # the right password, during the lockout
    setup.clock.now += timedelta(minutes=16)
    assert setup.client("ann").get("/queue").status_code == 200
    with setup.store.sessions() as db:
        logins = list(db.scalars(select(AuditEntry.action).where(AuditEntry.actor == "ann")))
        stored = db.get(User, "ann")
    assert logins.count("login_failed") == 4
    assert stored is not None
    assert PASSWORD not in stored.password_hash


def test_sessions_expire_when_idle_and_end_at_logout(setup: Setup) -> None:
    client = setup.client("ann")
    cookie = client.cookies.get("fraud_session")
    assert cookie
    queue = client.get("/queue")
    header = queue.headers["content-security-policy"]
    assert "script-src 'self'" in header
    assert queue.headers["x-frame-options"] == "DENY"
    setup.clock.now += timedelta(minutes=31)
    assert client.get("/queue", follow_redirects=False).status_code == 303
    client = setup.client("ann")
    assert client.post("/logout", data={"csrf": csrf_of(client.get("/queue").text)},
                       follow_redirects=False).status_code == 303  # fmt: skip
    assert client.get("/queue", follow_redirects=False).status_code == 303


def test_changes_need_the_csrf_token_and_our_origin(setup: Setup) -> None:
    client = setup.client("ann")
    token = csrf_of(client.get("/queue").text)
    assert client.post("/next", data={}).status_code == 403
    assert client.post("/next", data={"csrf": "forged"}).status_code == 403
    evil = client.post("/next", data={"csrf": token}, headers={"origin": "https://evil.test"})
    assert evil.status_code == 403
    assert setup.store.get("tx-big").claimed_by is None  # type: ignore[union-attr]
    done = client.post("/next", data={"csrf": token}, follow_redirects=False)
    assert done.headers["location"] == "/cases/tx-big"


def test_roles_guard_lead_and_admin_pages(setup: Setup) -> None:
    analyst = setup.client("ann")
    for path in ("/approvals", "/audit", "/team", "/admin/users"):
        refused = analyst.get(path)
        assert refused.status_code == 403, path
        assert "needs the" in refused.text
    lead = setup.client("lea")
    assert lead.get("/approvals").status_code == 200
    assert lead.get("/admin/users").status_code == 403
    token = csrf_of(analyst.get("/queue").text)
    bulk = analyst.post("/bulk", data={"csrf": token, "ids": "tx-big", "verdict": "fraud"})
    assert bulk.status_code == 403
    assert setup.store.get("tx-big").status == "open"  # type: ignore[union-attr]


def test_hostile_fields_are_shown_as_text(setup: Setup) -> None:
    client = setup.client("ann")
    page = client.get("/cases/tx-small")
    assert page.status_code == 200
    assert XSS not in page.text
    assert "&lt;script&gt;document.title=" in page.text
    assert "Many tiny payments" in page.text  # the rule's description, not just its code
    assert "number of payments on this card in the last 1 hour" in page.text
    token = csrf_of(page.text)
    client.post("/cases/tx-small/verdict", data={"csrf": token, "verdict": "fraud", "note": XSS})
    trail = setup.client("lea").get("/audit").text
    assert XSS not in trail
    assert "&lt;img src=x onerror=alert(1)&gt;" in trail


def test_bodies_are_bounded(setup: Setup) -> None:
    client = setup.client("ann")
    token = csrf_of(client.get("/queue").text)
    huge = client.post("/next", data={"csrf": token, "pad": "x" * 70_000})
    assert huge.status_code == 413


def test_a_verdict_through_the_api_queues_one_label_and_counts(setup: Setup) -> None:
    ann, bob = setup.client(), setup.client()
    me = ann.post("/api/v1/session", json={"username": "ann", "password": PASSWORD}).json()
    bob_me = bob.post("/api/v1/session", json={"username": "bob", "password": PASSWORD}).json()
    cases = ann.get("/api/v1/cases").json()
    assert cases[0]["transaction_id"] == "tx-big"
    headers = {"x-csrf-token": me["csrf_token"]}
    assert ann.post("/api/v1/cases/tx-big/claim").status_code == 403  # no CSRF header
    claimed = ann.post("/api/v1/cases/tx-big/claim", headers=headers).json()
    assert claimed["claimed_by"] == "ann"
    taken = bob.post("/api/v1/cases/tx-big/claim", headers={"x-csrf-token": bob_me["csrf_token"]})
    assert taken.status_code == 409
    assert "ann holds this case" in taken.json()["detail"]
    detail = bob.get("/api/v1/cases/tx-big").json()
    assert detail["claimed_by"] == "ann"
    assert any("number of payments" in s for s in detail["explanation"]["signals"])
    setup.clock.now += timedelta(seconds=95)
    override = ann.post("/api/v1/cases/tx-big/verdict", headers=headers,
                        json={"verdict": "legit"})  # fmt: skip
    assert override.status_code == 409
    assert "add a note" in override.json()["detail"]
    outcome = ann.post("/api/v1/cases/tx-big/verdict", headers=headers,
                       json={"verdict": "legit", "note": "regular customer"}).json()  # fmt: skip
    assert (outcome["status"], outcome["override"]) == ("decided", True)
    with setup.store.sessions() as db:
        assert [r.transaction_id for r in db.scalars(select(OutboxLabel))] == ["tx-big"]
    sample = setup.registry.get_sample_value
    assert sample("fraud_review_verdicts_total", {"verdict": "legit", "overturn": "true"}) == 1
    assert sample("fraud_review_decision_seconds_count") == 1
    assert sample("fraud_review_decision_seconds_sum") == pytest.approx(95)
    spec = ann.get("/api/openapi.json").json()
    assert "/api/v1/cases/{transaction_id}/verdict" in spec["paths"]


def test_declined_approval_and_list_changes_take_four_eyes(setup: Setup) -> None:
    ann = setup.client("ann")
    page = ann.get("/cases/tx-declined")
    token = csrf_of(page.text)
    assert 'data-needs-note="1"' in page.text  # legit overturns the decline: note first
    asked = {"csrf": token, "list_name": "block", "entity": "device", "note": "device farm"}
    ann.post("/cases/tx-declined/list", data=asked)
    ann.post("/cases/tx-declined/verdict",
             data={"csrf": token, "verdict": "legit", "note": "customer called"})  # fmt: skip
    assert setup.store.get("tx-declined").status == "pending_approval"  # type: ignore[union-attr]
    lead = setup.client("lea")
    approvals = lead.get("/approvals").text
    assert "tx-declined" in approvals
    assert "device farm" in approvals
    lead_token = csrf_of(approvals)
    request_id = re.search(r'action="/lists/(\d+)"', approvals).group(1)  # type: ignore[union-attr]
    lead.post(f"/lists/{request_id}", data={"csrf": lead_token, "decision": "approve"})
    lead.post("/approvals/tx-declined", data={"csrf": lead_token, "decision": "approve"})
    assert setup.listed == [(ListName.BLOCK, ListEntity.DEVICE, "dev-1")]
    decided = setup.store.get("tx-declined")
    assert decided is not None
    assert (decided.status, decided.approved_by) == ("decided", "lea")


def test_admins_create_users_with_a_password_shown_once(setup: Setup) -> None:
    admin = setup.client("root")
    token = csrf_of(admin.get("/admin/users").text)
    created = admin.post("/admin/users", data={"csrf": token, "username": "newbie",
                                                "role": "analyst"})  # fmt: skip
    password = re.search(r"<code>([A-Za-z0-9_-]{20})</code>", created.text)
    assert password, created.text
    assert created.headers["cache-control"] == "no-store"
    again = admin.get("/admin/users").text
    assert password.group(1) not in again
    newbie = setup.client()
    login = newbie.post("/login", data={"username": "newbie", "password": password.group(1)},
                        follow_redirects=False)  # fmt: skip
    assert login.status_code == 303


def test_queue_page_shows_depths_holders_and_due_times(setup: Setup) -> None:
    setup.client("bob").get("/cases/tx-small")  # claim on open
    page = setup.client("ann").get("/queue").text
    assert re.search(r"rules <b>1</b>", page)
    assert '<span class="holder">bob</span>' in page
    assert page.count("data-due=") == 3


def test_a_password_typed_as_the_username_is_not_audited(setup: Setup) -> None:
    client = setup.client()
    client.post("/login", data={"username": "secretlooking-pass", "password": "whatever12345"})
    with setup.store.sessions() as db:
        actors = set(
            db.scalars(select(AuditEntry.actor).where(AuditEntry.action == "login_failed"))
        )
    assert actors == {"?"}
