"""The REST API under /api/v1 (OpenAPI at /api/openapi.json): the same session, roles and
CSRF rule as the pages. Log in with POST /api/v1/session; send the returned `csrf_token`
as `X-CSRF-Token` on every POST."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from fraudstream.review import auth
from fraudstream.review.schema import Case
from fraudstream.review.store import MAX_NOTE
from fraudstream.review.triage import Queue, ReviewVerdict, Status
from fraudstream.review.web.app import Checked, User, console_of, log_in, set_session_cookie
from fraudstream.review.web.pages import case_context

router = APIRouter(prefix="/api/v1", tags=["review"])


class Login(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=auth.MAX_PASSWORD)


class Me(BaseModel):
    username: str
    role: auth.Role
    csrf_token: str = Field(description="Send as X-CSRF-Token on every POST.")


class CaseSummary(BaseModel):
    """A case as the queue lists it."""

    transaction_id: str
    queue: Queue
    status: Status
    amount: float
    currency: str
    score: float | None
    action_suggested: str
    expected_loss: float
    merchant_id: str
    event_time: datetime
    created_at: datetime
    due_at: datetime
    claimed_by: str | None = Field(description="Holder of a live claim, else null.")
    lease_until: datetime | None
    verdict: str | None
    verdict_by: str | None

    @classmethod
    def of(cls, found: Case, now: datetime) -> CaseSummary:
        live = found.lease_until is not None and found.lease_until > now
        return cls(
            transaction_id=found.transaction_id,
            queue=Queue(found.queue),
            status=Status(found.status),
            amount=found.amount,
            currency=found.currency,
            score=found.score,
            action_suggested=found.action_suggested,
            expected_loss=found.expected_loss,
            merchant_id=found.merchant_id,
            event_time=found.event_time,
            created_at=found.created_at,
            due_at=found.due_at,
            claimed_by=found.claimed_by if live else None,
            lease_until=found.lease_until if live else None,
            verdict=found.verdict,
            verdict_by=found.verdict_by,
        )


class Explanation(BaseModel):
    rules: list[str] = Field(description="Rule codes with what they mean.")
    signals: list[str] = Field(description="Top feature contributions, in words.")


class CaseDetail(CaseSummary):
    case: dict[str, object] = Field(description="The fraud.review record as received.")
    explanation: Explanation


class VerdictIn(BaseModel):
    verdict: ReviewVerdict
    note: str = Field(
        default="",
        max_length=MAX_NOTE,
        description="Required when the verdict goes against the model.",
    )


class OutcomeOut(BaseModel):
    transaction_id: str
    status: Status = Field(
        description="decided (a label is queued), pending_approval (a "
        "lead must approve it) or open (escalated)."
    )
    verdict: ReviewVerdict
    override: bool


@router.post("/session")
def open_session(request: Request, body: Login, response: Response) -> Me:
    """Log in: a session cookie, and its CSRF token to send as X-CSRF-Token."""
    try:
        token, user = log_in(request, body.username, body.password)
    except auth.AuthError as exc:
        raise HTTPException(401, str(exc)) from exc
    set_session_cookie(response, console_of(request).settings, token)
    return Me(username=user.username, role=user.role, csrf_token=user.csrf_token)


@router.get("/me")
def me(user: User) -> Me:
    return Me(username=user.username, role=user.role, csrf_token=user.csrf_token)


@router.get("/cases")
def cases(
    request: Request,
    user: User,
    queue: Queue | None = None,
    min_amount: Annotated[float | None, Query(ge=0)] = None,
    sort: Annotated[str, Query(pattern="^(priority|amount|age)$")] = "priority",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[CaseSummary]:
    """Open cases in queue order (escalations for leads only)."""
    console = console_of(request)
    now = console.clock()
    found = console.store.queue(
        now,
        user,
        queue=queue.value if queue else None,
        min_amount=min_amount,
        sort=sort,
        limit=limit,
    )
    return [CaseSummary.of(c, now) for c in found]


@router.get("/cases/{transaction_id}")
def case_detail(request: Request, transaction_id: str, user: User) -> CaseDetail:
    """One case with its explanation (the view is audited; it does not claim)."""
    console = console_of(request)
    now = console.clock()
    found = console.store.view(transaction_id[:128], user, now)
    if found is None:
        raise HTTPException(404, "no such case")
    context = case_context(console, found)
    summary = CaseSummary.of(found, now)
    return CaseDetail(
        **summary.model_dump(),
        case=found.payload,
        explanation=Explanation(
            rules=[f"{r['code']}: {r['words']}" for r in context["rules"]],
            signals=[s["words"] for s in context["signals"]],
        ),
    )


@router.post("/cases/{transaction_id}/claim")
def claim(request: Request, transaction_id: str, user: Checked) -> CaseSummary:
    """Claim (or renew the claim on) an open case; 409 when someone else holds it."""
    console = console_of(request)
    now = console.clock()
    return CaseSummary.of(console.store.claim(transaction_id, user, now), now)


@router.post("/cases/{transaction_id}/release", status_code=204)
def release(request: Request, transaction_id: str, user: Checked) -> None:
    console = console_of(request)
    console.store.release(transaction_id, user, console.clock())


@router.post("/cases/{transaction_id}/verdict")
def decide(request: Request, transaction_id: str, body: VerdictIn, user: Checked) -> OutcomeOut:
    """Decide a case you hold; fraud and legit each put one label on fraud.labels."""
    outcome = console_of(request).decide(transaction_id, user, body.verdict, body.note)
    return OutcomeOut(
        transaction_id=outcome.transaction_id,
        status=outcome.status,
        verdict=outcome.verdict,
        override=outcome.override,
    )


@router.post(
    "/next",
    response_model=None,
    responses={200: {"model": CaseSummary}, 204: {"description": "The queue is empty."}},
)
def next_case(request: Request, user: Checked) -> Response:
    """Claim the case to work next (one you already hold first)."""
    console = console_of(request)
    now = console.clock()
    found = console.store.next_case(user, now)
    if found is None:
        return Response(status_code=204)
    return JSONResponse(CaseSummary.of(found, now).model_dump(mode="json"))
