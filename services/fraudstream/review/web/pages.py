"""The console's server-rendered pages: login, queue, case, approvals, audit, team, users.

Every page needs a session; pages that change something need the session's CSRF token
(`app.checked`). Forms post and redirect (303) with a message, so reloading a page never
repeats an action.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from statistics import median
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy import select

from fraudstream.contracts import ReasonSource, ReviewCase
from fraudstream.review import auth, lists
from fraudstream.review.auth import AuthError, Principal, Role
from fraudstream.review.schema import AuditEntry, Case, ListRequest, User
from fraudstream.review.store import MAX_NOTE, CaseError, audit
from fraudstream.review.triage import (
    Queue,
    ReviewVerdict,
    Status,
    describe_feature,
    explain_contribution,
    is_override,
)
from fraudstream.review.web.app import (
    COOKIE,
    Checked,
    Console,
    console_of,
    log_in,
    redirect,
    render,
    requires,
    set_session_cookie,
)
from fraudstream.review.web.app import (
    User as CurrentUser,
)
from fraudstream.rules.model import ListEntity, ListName

router = APIRouter(include_in_schema=False)
Note = Annotated[str, Form(max_length=MAX_NOTE)]
Decision = Annotated[str, Form(pattern="^(approve|refuse)$")]  # a lead's second look
Lead = Annotated[Principal, Depends(requires(Role.LEAD))]
Admin = Annotated[Principal, Depends(requires(Role.ADMIN))]
SORTS = ("priority", "amount", "age")
TOP_CONTRIBUTIONS = 8


@router.get("/")
def home() -> RedirectResponse:
    return redirect("/queue")


@router.get("/login")
def login_form(request: Request) -> Response:
    return render(request, "login.html", None)


@router.post("/login")
def login(
    request: Request,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=auth.MAX_PASSWORD)],
) -> Response:
    """Log in (`app.log_in`) and go to the queue; the form again, with why, when refused."""
    try:
        token, _user = log_in(request, username, password)
    except AuthError as exc:
        return render(request, "login.html", None, error=str(exc),
                      username=username.strip().lower()[:64], status_code=401)  # fmt: skip
    response = redirect("/queue")
    set_session_cookie(response, console_of(request).settings, token)
    return response


@router.post("/logout")
def logout(request: Request, user: Checked) -> Response:
    console = console_of(request)
    with console.store.sessions.begin() as db:
        auth.close_session(db, request.cookies.get(COOKIE))
        audit(db, user.username, "logout", None, console.clock())
    response = redirect("/login", msg="Logged out.")
    response.delete_cookie(COOKIE, path="/")
    return response


# -- the queue ------------------------------------------------------------------------------


@router.get("/queue")
def queue_page(
    request: Request,
    user: CurrentUser,
    queue: Annotated[Queue | None, Query()] = None,
    min_amount: Annotated[float | None, Query(ge=0, le=1e12)] = None,
    sort: Annotated[str, Query(pattern="^(priority|amount|age)$")] = "priority",
) -> Response:
    console = console_of(request)
    now = console.clock()
    cases = console.store.queue(
        now, user, queue=queue.value if queue else None, min_amount=min_amount, sort=sort
    )
    queues = [q for q in Queue if q is not Queue.ESCALATION or user.at_least(Role.LEAD)]
    summary = console.store.summary(now)
    total = sum(summary.queues[q.value].open for q in queues)
    return render(
        request,
        "queue.html",
        user,
        cases=cases,
        summary=summary,
        total=total,
        queues=queues,
        queue=queue,
        min_amount=min_amount,
        sort=sort,
        sorts=SORTS,
        page="queue",
    )


@router.post("/next")
def next_case(request: Request, user: Checked) -> Response:
    """Claim the case to work next (one already held first) and open it."""
    console = console_of(request)
    found = console.store.next_case(user, console.clock())
    if found is None:
        return redirect("/queue", msg="Nothing to review: the queue is empty.")
    return redirect(f"/cases/{found.transaction_id}")


@router.post("/bulk")
async def bulk(request: Request, user: Checked) -> Response:
    """A lead decides several open cases at once (each audited as a bulk verdict)."""
    if not user.at_least(Role.LEAD):
        raise HTTPException(403, "bulk decisions need the lead role")
    form = await request.form()
    ids = [v for v in form.getlist("ids") if isinstance(v, str)][:200]
    verdict = _verdict(form.get("verdict"))
    note = str(form.get("note") or "")[:MAX_NOTE]
    if verdict is ReviewVerdict.UNSURE:
        raise CaseError("bulk decisions are fraud or legit")
    done, refused = 0, []
    for tx_id in ids:
        try:
            console_of(request).decide(tx_id, user, verdict, note, bulk=True)
            done += 1
        except CaseError as exc:
            refused.append(f"{tx_id}: {exc}")
    message = f"{done} case(s) decided {verdict.value}."
    if refused:
        return redirect("/queue", msg=message, err="; ".join(refused[:5]))
    return redirect("/queue", msg=message)


# -- a case ---------------------------------------------------------------------------------


@router.get("/cases/{transaction_id}")
def case_page(request: Request, transaction_id: str, user: CurrentUser) -> Response:
    """The case, claimed on open when it is free (others see who holds it)."""
    console = console_of(request)
    now = console.clock()
    store = console.store
    found = store.get(transaction_id[:128])
    if found is None:
        return render(request, "missing.html", user, transaction_id=transaction_id, status_code=404)
    claim_error = None
    if found.status == Status.OPEN.value:
        try:
            store.claim(found.transaction_id, user, now)
        except CaseError as exc:
            claim_error = str(exc)
    found = store.view(found.transaction_id, user, now)
    assert found is not None  # noqa: S101 - it existed a moment ago; cases are never deleted
    held = (
        found.claimed_by == user.username
        and found.lease_until is not None
        and found.lease_until > now
    )
    return render(
        request,
        "case.html",
        user,
        case=found,
        held=held,
        claim_error=claim_error,
        page="case",
        **case_context(console, found),
    )


def case_context(console: Console, found: Case) -> dict[str, Any]:
    """What the case page shows besides the case row: reasons in words, the card's
    timeline, linked entities, list requests and the case's audit trail."""
    payload = ReviewCase.model_validate(found.payload, strict=False)
    rules = [
        {"code": r.code, "words": console.rule_descriptions.get(r.code) or r.detail or r.code}
        for r in payload.reasons
        if r.source is ReasonSource.RULE
    ]
    top = sorted(payload.contributions.items(), key=lambda kv: -abs(kv[1]))[:TOP_CONTRIBUTIONS]
    signals = [
        {"feature": name, "words": explain_contribution(name, value), "towards_fraud": value > 0}
        for name, value in top
    ]
    with console.store.sessions() as db:
        requests = list(
            db.scalars(
                select(ListRequest)
                .where(ListRequest.transaction_id == found.transaction_id)
                .order_by(ListRequest.id)
            )
        )
        trail = list(
            db.scalars(
                select(AuditEntry)
                .where(AuditEntry.transaction_id == found.transaction_id)
                .order_by(AuditEntry.id.desc())
                .limit(50)
            )
        )
    needs_note = {
        v.value: is_override(v, found.action_suggested, found.score)
        for v in (ReviewVerdict.FRAUD, ReviewVerdict.LEGIT)
    }
    return {
        "tx": payload.transaction,
        "member_scores": payload.member_scores,
        "rules": rules,
        "signals": signals,
        "timeline": console.timeline(found.card_token, 20),
        "related": console.store.related(found),
        "list_requests": requests,
        "trail": trail,
        "needs_note": needs_note,
        "entities": [e for e in lists.FIELDS if getattr(found, lists.FIELDS[e])],
        "describe": describe_feature,
    }


@router.post("/cases/{transaction_id}/verdict")
def verdict(
    request: Request,
    transaction_id: str,
    user: Checked,
    verdict: Annotated[ReviewVerdict, Form()],
    note: Note = "",
) -> Response:
    """Decide the held case, then open the next one (the next-item flow)."""
    console = console_of(request)
    outcome = console.decide(transaction_id, user, verdict, note)
    said = {
        Status.DECIDED: f"{transaction_id} decided {verdict.value}.",
        Status.PENDING_APPROVAL: f"{transaction_id}: {verdict.value} waits for a lead's "
        "approval (the rules declined it).",
        Status.OPEN: f"{transaction_id} escalated.",
    }[outcome.status]
    following = console.store.next_case(user, console.clock())
    if following is None:
        return redirect("/queue", msg=f"{said} The queue is empty.")
    return redirect(f"/cases/{following.transaction_id}", msg=said)


@router.post("/cases/{transaction_id}/release")
def release(request: Request, transaction_id: str, user: Checked) -> Response:
    console = console_of(request)
    console.store.release(transaction_id, user, console.clock())
    return redirect("/queue", msg=f"{transaction_id} released.")


@router.post("/cases/{transaction_id}/snooze")
def snooze(
    request: Request,
    transaction_id: str,
    user: Checked,
    hours: Annotated[float, Form(gt=0, le=168)],
) -> Response:
    console = console_of(request)
    now = console.clock()
    console.store.snooze(transaction_id, user, now + timedelta(hours=hours), now)
    return redirect("/queue", msg=f"{transaction_id} snoozed for {hours:g} h.")


@router.post("/cases/{transaction_id}/escalate")
def escalate(request: Request, transaction_id: str, user: Checked, note: Note = "") -> Response:
    console = console_of(request)
    console.store.escalate(transaction_id, user, note, console.clock())
    return redirect("/queue", msg=f"{transaction_id} escalated.")


@router.post("/cases/{transaction_id}/list")
def list_request(
    request: Request,
    transaction_id: str,
    user: Checked,
    list_name: Annotated[ListName, Form()],
    entity: Annotated[ListEntity, Form()],
    note: Note = "",
) -> Response:
    """Ask for the case's card, merchant, device or IP on a list (a lead approves)."""
    if entity not in lists.FIELDS:
        raise CaseError(f"{entity.value} lists are managed with fraudctl lists")
    console = console_of(request)
    lists.request_change(
        console.store,
        transaction_id,
        user,
        name=list_name,
        entity=entity,
        reason=note,
        now=console.clock(),
    )
    return redirect(
        f"/cases/{transaction_id}",
        msg=f"Asked to {list_name.value}-list the {entity.value}; a lead approves.",
    )


# -- leads ----------------------------------------------------------------------------------


@router.get("/approvals")
def approvals(request: Request, user: Lead) -> Response:
    console = console_of(request)
    return render(
        request,
        "approvals.html",
        user,
        cases=console.store.pending_approvals(),
        requests=lists.pending(console.store),
        page="approvals",
    )


@router.post("/approvals/{transaction_id}")
def approve_case(
    request: Request,
    transaction_id: str,
    user: Checked,
    decision: Decision,
) -> Response:
    console = console_of(request)
    outcome = console.store.approve(transaction_id, user, decision == "approve", console.clock())
    said = (
        "approved: its label is on its way"
        if outcome.status is Status.DECIDED
        else "refused: back in the queue"
    )
    return redirect("/approvals", msg=f"{transaction_id} {said}.")


@router.post("/lists/{request_id}")
def approve_list(
    request: Request,
    request_id: int,
    user: Checked,
    decision: Decision,
) -> Response:
    console = console_of(request)
    done = lists.decide_change(
        console.store,
        request_id,
        user,
        approve=decision == "approve",
        apply=console.apply_list,
        now=console.clock(),
    )
    return redirect("/approvals", msg=f"List request {done.id} {done.status}.")


@router.get("/audit")
def audit_log(
    request: Request,
    user: Lead,
    actor: Annotated[str | None, Query(max_length=64)] = None,
    transaction_id: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(500)
    if actor:
        query = query.where(AuditEntry.actor == actor)
    if transaction_id:
        query = query.where(AuditEntry.transaction_id == transaction_id)
    with console_of(request).store.sessions() as db:
        entries = list(db.scalars(query))
    return render(
        request,
        "audit.html",
        user,
        entries=entries,
        actor=actor or "",
        transaction_id=transaction_id or "",
        page="audit",
    )


@router.get("/team")
def team(request: Request, user: Lead, days: Annotated[int, Query(ge=1, le=90)] = 7) -> Response:
    """Per reviewer over the last `days`: cases decided (verdicts waiting for approval
    included; chargeback feeds, which are not users, left out), overturns of the model,
    the median time from the reviewer's claim to the verdict, and SLA misses."""
    console = console_of(request)
    since = console.clock() - timedelta(days=days)
    with console.store.sessions() as db:
        decided = list(
            db.scalars(
                select(Case).where(
                    Case.verdict_at >= since, Case.verdict_by.in_(select(User.username))
                )
            )
        )
    stats: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"decided": 0, "overturns": 0, "late": 0, "times": []}
    )
    for found in decided:
        row = stats[found.verdict_by or "?"]
        row["decided"] += 1
        verdict_given = ReviewVerdict(found.verdict or ReviewVerdict.LEGIT.value)
        row["overturns"] += is_override(verdict_given, found.action_suggested, found.score)
        row["late"] += bool(found.verdict_at and found.verdict_at > found.due_at)
        if found.claimed_at and found.verdict_at and found.verdict_at >= found.claimed_at:
            row["times"].append((found.verdict_at - found.claimed_at).total_seconds())
    rows = [
        {"reviewer": name, **row, "median_s": median(row["times"]) if row["times"] else None}
        for name, row in sorted(stats.items())
    ]
    return render(request, "team.html", user, rows=rows, days=days, page="team")


# -- admin ----------------------------------------------------------------------------------


@router.get("/admin/users")
def users_page(request: Request, user: Admin) -> Response:
    return _users(request, user)


def _users(request: Request, user: Principal, **context: Any) -> Response:
    with console_of(request).store.sessions() as db:
        users = list(db.scalars(select(User).order_by(User.username)))
    return render(
        request, "users.html", user, users=users, roles=list(Role), page="users", **context
    )


@router.post("/admin/users")
def add_user(
    request: Request,
    user: Checked,
    username: Annotated[str, Form(max_length=64)],
    role: Annotated[Role, Form()],
) -> Response:
    """Create a user with a generated password, shown on this response only."""
    _admin(user)
    console = console_of(request)
    password = auth.generate_password()
    now = console.clock()
    try:
        with console.store.sessions.begin() as db:
            created = auth.create_user(db, username.strip().lower(), role, password, now)
            audit(
                db,
                user.username,
                "user_add",
                None,
                now,
                {"user": created.username, "role": role.value},
            )
    except AuthError as exc:
        return _users(request, user, err=str(exc))
    return _users(request, user, created=created.username, password=password)


@router.post("/admin/users/{username}")
def change_user(
    request: Request,
    username: str,
    user: Checked,
    action: Annotated[str, Form(pattern="^(reset|disable|enable)$")],
) -> Response:
    """Reset a password (a new generated one, shown once), disable or enable a user."""
    _admin(user)
    console = console_of(request)
    now = console.clock()
    password = auth.generate_password() if action == "reset" else None
    try:
        with console.store.sessions.begin() as db:
            found = db.get(User, username)
            if found is None:
                raise AuthError(f"no user {username}")
            if action == "reset" and password is not None:
                auth.set_password(db, username, password)
            elif username == user.username:
                raise AuthError("you cannot disable or enable yourself")
            else:
                found.disabled = action == "disable"
                if found.disabled:
                    auth.end_sessions(db, username)
            audit(db, user.username, f"user_{action}", None, now, {"user": username})
    except AuthError as exc:
        return _users(request, user, err=str(exc))
    if password is not None:
        return _users(request, user, created=username, password=password)
    return _users(request, user, msg=f"{username} {action}d.")


def _admin(user: Principal) -> None:
    if not user.at_least(Role.ADMIN):
        raise HTTPException(403, "this needs the admin role")


def _verdict(value: object) -> ReviewVerdict:
    try:
        return ReviewVerdict(str(value))
    except ValueError:
        raise CaseError("choose a verdict: fraud, legit or unsure") from None
