"""The console's FastAPI application: wiring, security headers, sessions and CSRF.

Pages (pages.py) are server-rendered Jinja2 with autoescaping, so transaction fields are
shown as text, never as markup; the Content-Security-Policy allows scripts from our own
static file only. Every state-changing request must carry the session's CSRF token (form
field `csrf` or header `X-CSRF-Token`) and, when the browser sends one, our own Origin.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException

from fraudstream import __version__
from fraudstream.review import auth
from fraudstream.review.auth import Principal, Role
from fraudstream.review.metrics import ReviewMetrics
from fraudstream.review.schema import User as UserRow
from fraudstream.review.settings import ReviewSettings
from fraudstream.review.store import CaseError, CaseStore, Outcome, audit
from fraudstream.review.timeline import Timeline
from fraudstream.review.triage import ReviewVerdict
from fraudstream.rules.model import ListEntity, ListName

HERE = Path(__file__).resolve().parent
COOKIE = "fraud_session"
MAX_BODY = 64 * 1024
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'"
)


@dataclass
class Console:
    """What the routes need, injected (tests pass their own clock and list writer)."""

    store: CaseStore
    settings: ReviewSettings
    metrics: ReviewMetrics
    apply_list: Callable[[ListName, ListEntity, str], None]
    timeline: Timeline
    rule_descriptions: dict[str, str] = field(default_factory=dict)  # reason code -> words
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def decide(
        self,
        transaction_id: str,
        user: Principal,
        verdict: ReviewVerdict,
        note: str,
        *,
        bulk: bool = False,
    ) -> Outcome:
        """`CaseStore.decide`, counted in the metrics (verdicts, overturns, time, SLA)."""
        outcome = self.store.decide(transaction_id, user, verdict, note, self.clock(), bulk=bulk)
        self.metrics.count_verdict(outcome)
        return outcome


class LoginRequired(Exception):
    """No live session: pages redirect to the login form, the API answers 401."""


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def principal(request: Request) -> Principal:
    """The request's logged-in user (renewing the session's idle clock)."""
    console = console_of(request)
    with console.store.sessions.begin() as db:
        found = auth.resolve_session(
            db,
            request.cookies.get(COOKIE),
            console.clock(),
            idle_s=console.settings.review_session_idle_s,
            max_s=console.settings.review_session_max_s,
        )
    if found is None:
        raise LoginRequired
    return found


async def checked(request: Request, user: Annotated[Principal, Depends(principal)]) -> Principal:
    """`principal`, for requests that change something: same origin and the CSRF token."""
    same_origin(request)
    sent = request.headers.get("x-csrf-token")
    if sent is None and "form" in request.headers.get("content-type", ""):
        value = (await request.form()).get("csrf")
        sent = value if isinstance(value, str) else None
    if not auth.csrf_ok(user, sent):
        raise HTTPException(403, "missing or wrong CSRF token; reload the page")
    return user


def log_in(request: Request, username: str, password: str) -> tuple[str, Principal]:
    """Check the password (argon2), count a failure towards the lockout, open a session:
    (the cookie's token, the user). `AuthError` (one message for every refusal) when
    refused; either way the attempt is audited and counted."""
    same_origin(request)
    console = console_of(request)
    settings, now = console.settings, console.clock()
    name = username.strip().lower()
    opened: tuple[str, Principal | None] | None = None
    refused = auth.AuthError("the session could not be opened; try again")
    with console.store.sessions.begin() as db:  # failures are counted: always commit
        try:
            user = auth.authenticate(
                db,
                name,
                password,
                now,
                max_failures=settings.review_lockout_failures,
                lockout_s=settings.review_lockout_s,
            )
        except auth.AuthError as exc:
            # Only a user's own name is audited: a password typed into the name field
            # never lands in the log.
            known = bool(auth.USERNAME.match(name)) and db.get(UserRow, name) is not None
            audit(db, name if known else "?", "login_failed", None, now)
            refused = exc
        else:
            token = auth.open_session(db, user, now)
            limits = {
                "idle_s": settings.review_session_idle_s,
                "max_s": settings.review_session_max_s,
            }
            opened = token, auth.resolve_session(db, token, now, **limits)
            audit(db, user.username, "login", None, now)
    console.metrics.logins.labels("ok" if opened else "refused").inc()
    if opened is None or opened[1] is None:
        raise refused
    return opened[0], opened[1]


def set_session_cookie(response: Response, settings: ReviewSettings, token: str) -> None:
    """The session cookie: HttpOnly, SameSite=Strict, Secure unless configured off."""
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(settings.review_session_max_s),
        path="/",
        secure=settings.review_cookie_secure,
        httponly=True,
        samesite="strict",
    )


def same_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        raise HTTPException(403, "cross-origin request refused")


def requires(role: Role) -> Callable[[Principal], Principal]:
    def check(user: Annotated[Principal, Depends(principal)]) -> Principal:
        if not user.at_least(role):
            raise HTTPException(403, f"this needs the {role.value} role")
        return user

    return check


User = Annotated[Principal, Depends(principal)]
Checked = Annotated[Principal, Depends(checked)]


def create_app(console: Console) -> FastAPI:
    """The console and its REST API (OpenAPI at /api/openapi.json, docs at /api/docs)."""
    from fraudstream.review.web import api, pages  # noqa: PLC0415 - they import this module

    app = FastAPI(
        title="fraudstream review",
        version=__version__,
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
    )
    app.state.console = console
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True)
    )
    env.filters.update(when=_when, money=_money, score=_score)
    app.state.templates = Jinja2Templates(env=env)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(pages.router)
    app.include_router(api.router)
    app.middleware("http")(_guard)
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(CaseError, _case_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    return app


async def _guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Bounded request bodies, and security headers on every response."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        return JSONResponse({"detail": f"request bodies are limited to {MAX_BODY} bytes"}, 413)
    if (
        request.method not in {"GET", "HEAD"}
        and length is None
        and request.headers.get("transfer-encoding")
    ):
        return JSONResponse({"detail": "send a Content-Length"}, 411)
    response = await call_next(request)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


async def _login_required(request: Request, _exc: Exception) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": "log in first"}, 401)
    return RedirectResponse("/login", 303)


async def _http_error(request: Request, exc: Exception) -> Response:
    """API errors as JSON; on pages, a page saying what went wrong."""
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101 - registered for it only
    if request.url.path.startswith("/api/") or exc.status_code not in {403, 404}:
        return await http_exception_handler(request, exc)
    return render(request, "error.html", None, status_code=exc.status_code, detail=exc.detail)


async def _case_error(request: Request, exc: Exception) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": str(exc)}, 409)
    back = request.headers.get("referer", "/queue")
    target = back if back.startswith(f"{request.url.scheme}://{request.url.netloc}/") else "/queue"
    return RedirectResponse(_with(target, err=str(exc)), 303)


def _with(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = {k: v for k, v in parse_qsl(parts.query) if k not in {"msg", "err"}}
    return urlunsplit(parts._replace(query=urlencode({**query, **params})))


def redirect(url: str, **params: str) -> RedirectResponse:
    """A 303 to `url` with a message (`msg=` or `err=`) the next page shows."""
    return RedirectResponse(_with(url, **params) if params else url, 303)


def render(
    request: Request,
    template: str,
    user: Principal | None,
    *,
    status_code: int = 200,
    **context: Any,
) -> Response:
    """A page from templates/, with the user, the clock and any message in the URL."""
    templates: Jinja2Templates = request.app.state.templates
    console = console_of(request)
    return templates.TemplateResponse(
        request,
        template,
        {
            "user": user,
            "now": console.clock(),
            "msg": request.query_params.get("msg", "")[:300],
            "err": request.query_params.get("err", "")[:600],
            **context,
        },
        status_code=status_code,
    )


def _when(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _money(amount: float, currency: str = "") -> str:
    return f"{amount:,.2f} {currency}".strip()


def _score(value: float | None) -> str:
    return "rules only" if value is None else f"{value:.3f}"
