"""`fraudctl review`: run the review service, manage console users, import chargebacks,
and see the backlog.

The review packages (SQLAlchemy, argon2, FastAPI: the `review` extra) are imported by the
commands, not here, so `fraudctl` works on an install without them.
"""
# ruff: noqa: PLC0415

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from fraudstream.json_output import JSON_OPTION, echo_json
from fraudstream.settings import mask_url

if TYPE_CHECKING:
    from fraudstream.review.settings import ReviewSettings
    from fraudstream.review.store import CaseStore

ROLES = ("analyst", "lead", "admin")  # auth.Role


def open_store(settings: ReviewSettings | None = None) -> CaseStore:
    """The case store of the settings (migrated to the newest schema); a missing `review`
    extra or an unreachable database is one clear error."""
    try:
        from fraudstream.review.database import ReviewStoreError, open_engine
        from fraudstream.review.settings import ReviewSettings
        from fraudstream.review.store import CaseStore, Rules
    except ImportError as exc:
        raise click.ClickException(
            f"{exc}: install the review extra (pip install 'fraudstream[review]')"
        ) from exc
    settings = settings or ReviewSettings()
    try:
        return CaseStore(open_engine(settings.database_url()), Rules.from_settings(settings))
    except ReviewStoreError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group("review")
def review_group() -> None:
    """The review service: case queue, reviewer console, verdicts as labels."""


@review_group.command("serve")
def serve_command() -> None:
    """Run the review service (intake, label relay, console) until Ctrl-C."""
    from fraudstream.review.service import serve

    serve()


@review_group.group("user")
def user_group() -> None:
    """Console users (passwords are generated and printed once)."""


@user_group.command("add")
@click.argument("username")
@click.option("--role", type=click.Choice(ROLES), default="analyst", show_default=True)
def user_add(username: str, role: str) -> None:
    """Create a user; prints its generated password once."""
    from fraudstream.review import auth
    from fraudstream.review.store import audit

    store = open_store()
    password = auth.generate_password()
    now = datetime.now(UTC)
    try:
        with store.sessions.begin() as db:
            auth.create_user(db, username, auth.Role(role), password, now)
            audit(db, "fraudctl", "user_add", None, now, {"user": username, "role": role})
    except auth.AuthError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"created {role} {username}; password (shown once): {password}")


@user_group.command("reset")
@click.argument("username")
def user_reset(username: str) -> None:
    """Give a user a new generated password (printed once) and end their sessions; also
    lifts a lockout."""
    from fraudstream.review import auth
    from fraudstream.review.store import audit

    store = open_store()
    password = auth.generate_password()
    now = datetime.now(UTC)
    try:
        with store.sessions.begin() as db:
            auth.set_password(db, username, password)
            audit(db, "fraudctl", "user_reset", None, now, {"user": username})
    except auth.AuthError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"new password for {username} (shown once): {password}")


@user_group.command("list")
@JSON_OPTION
def user_list(as_json: bool) -> None:
    """Users, their roles and whether they are locked or disabled."""
    from sqlalchemy import select

    from fraudstream.review.schema import User

    with open_store().sessions() as db:
        users = list(db.scalars(select(User).order_by(User.username)))
    now = datetime.now(UTC)
    rows = [
        {
            "username": u.username,
            "role": u.role,
            "disabled": u.disabled,
            "locked": bool(u.locked_until and u.locked_until > now),
            "created_at": u.created_at,
        }
        for u in users
    ]
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        state = "disabled" if row["disabled"] else "locked" if row["locked"] else "active"
        click.echo(f"{row['username']:<24} {row['role']:<8} {state}")


@review_group.command("chargebacks")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--feed",
    default="chargebacks",
    show_default=True,
    help="Who the labels come from (their actor).",
)
@JSON_OPTION
def chargebacks_command(path: Path, feed: str, as_json: bool) -> None:
    """Import a CSV of chargebacks (a `transaction_id` column, optional card_token,
    merchant_id, event_time, device_id, ip, reason): one fraud label each on fraud.labels,
    sent by the running review service. A file loaded twice adds nothing twice."""
    from fraudstream.review import chargebacks

    result = chargebacks.import_file(open_store(), path, feed, datetime.now(UTC))
    if as_json:
        echo_json(result)
    else:
        click.echo(
            f"{result.queued} chargeback label(s) queued, {result.duplicates} already "
            f"imported, {len(result.invalid)} invalid"
        )
        for line in result.invalid[:20]:
            click.echo(f"  {line}", err=True)
    if result.invalid:
        raise SystemExit(1)


@review_group.command("status")
@JSON_OPTION
def status_command(as_json: bool) -> None:
    """The backlog: open cases per queue, overdue, waiting for approval, labels to relay."""
    from fraudstream.review.database import current_revision
    from fraudstream.review.settings import ReviewSettings

    settings = ReviewSettings()
    store = open_store(settings)
    now = datetime.now(UTC)
    summary = store.summary(now)
    if as_json:
        echo_json(
            {
                "database": mask_url(settings.database_url()),
                "schema": current_revision(store.engine),
                **vars(summary),
            }
        )
        return
    click.echo(f"case store: {mask_url(settings.database_url())}")
    for queue, stats in summary.queues.items():
        age = (
            f", oldest {(now - stats.oldest).total_seconds() / 60:.0f} min" if stats.oldest else ""
        )
        click.echo(f"  {queue:<11} {stats.open:>6} open, {stats.overdue} overdue{age}")
    click.echo(
        f"  snoozed {summary.snoozed}, waiting for approval {summary.pending_approvals}, "
        f"decided {summary.decided}, labels not yet on the topic {summary.outbox_pending}"
    )
