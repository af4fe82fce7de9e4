"""Console users and sessions: argon2id password hashes, lockout, session tokens, CSRF.

A session cookie carries 32 random bytes; the database keeps only their SHA-256, so a
leaked table cannot be replayed as cookies. Each session has its own CSRF token, which
every form and API call that changes something must send back.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session as DbSession

from fraudstream.errors import FraudStreamError
from fraudstream.review.schema import Session, User

USERNAME = re.compile(r"^[a-z][a-z0-9_.-]{1,62}$")
MIN_PASSWORD = 12
MAX_PASSWORD = 256  # argon2 hashes any length; the bound keeps requests small
_HASHER = PasswordHasher()  # argon2id, the library's current recommended parameters
# Verified against when the user does not exist, so a login takes as long either way.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))
# Each verification takes the hasher's memory (64 MiB): at most this many at once, so a
# flood of login attempts queues instead of exhausting the host's memory.
_VERIFYING = threading.BoundedSemaphore(4)


class Role(StrEnum):
    """Analysts work cases; leads also work escalations, approve (four eyes) and decide in
    bulk; admins also manage users."""

    ANALYST = "analyst"
    LEAD = "lead"
    ADMIN = "admin"


RANK = {Role.ANALYST: 0, Role.LEAD: 1, Role.ADMIN: 2}


class AuthError(FraudStreamError):
    """A user cannot be created or authenticated (the message is safe to show)."""


@dataclass(frozen=True)
class Principal:
    """The logged-in user of a request."""

    username: str
    role: Role
    csrf_token: str

    def at_least(self, role: Role) -> bool:
        return RANK[self.role] >= RANK[role]


def generate_password() -> str:
    """A fresh 20-character password (about 119 bits), shown once to whoever creates it."""
    return secrets.token_urlsafe(15)


def create_user(db: DbSession, username: str, role: Role, password: str, now: datetime) -> User:
    """Add a user (the caller commits); refuses a taken name or a short password."""
    if not USERNAME.match(username):
        raise AuthError("usernames are 2-63 characters: lower-case letters, digits, _ . -")
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AuthError(f"passwords are {MIN_PASSWORD}-{MAX_PASSWORD} characters")
    if db.get(User, username) is not None:
        raise AuthError(f"user {username} exists")
    user = User(
        username=username,
        password_hash=_HASHER.hash(password),
        role=role.value,
        failed_logins=0,
        disabled=False,
        created_at=now,
    )
    db.add(user)
    return user


def authenticate(
    db: DbSession,
    username: str,
    password: str,
    now: datetime,
    *,
    max_failures: int,
    lockout_s: float,
) -> User:
    """The user whose password this is, or `AuthError` with one message for every failure
    (unknown user, wrong password, disabled or locked) so it reveals nothing. The caller
    commits: failures are counted and `max_failures` in a row lock the account."""
    user = db.get(User, username) if len(password) <= MAX_PASSWORD else None
    refused = AuthError("wrong username or password, or the account is locked")
    if user is None:
        _verify(_DUMMY_HASH, password)
        raise refused
    if user.disabled or (user.locked_until is not None and user.locked_until > now):
        _verify(_DUMMY_HASH, password)
        raise refused
    if not _verify(user.password_hash, password):
        user.failed_logins += 1
        if user.failed_logins >= max_failures:
            user.locked_until = now + timedelta(seconds=lockout_s)
            user.failed_logins = 0
        raise refused
    user.failed_logins = 0
    user.locked_until = None
    if _HASHER.check_needs_rehash(user.password_hash):
        user.password_hash = _HASHER.hash(password)
    return user


def _verify(hashed: str, password: str) -> bool:
    with _VERIFYING:
        try:
            return _HASHER.verify(hashed, password)
        except (VerificationError, InvalidHashError):
            return False


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(db: DbSession, user: User, now: datetime) -> str:
    """A new session for `user`; returns the cookie value (the caller commits)."""
    token = secrets.token_urlsafe(32)
    db.add(
        Session(
            token_hash=_digest(token),
            username=user.username,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen=now,
        )
    )
    return token


def resolve_session(
    db: DbSession, token: str | None, now: datetime, *, idle_s: float, max_s: float
) -> Principal | None:
    """The session's user when the token is live (and its idle clock renewed), else None."""
    if not token or len(token) > 128:
        return None
    found = db.get(Session, _digest(token))
    if found is None:
        return None
    user = db.get(User, found.username)
    expired = (now - found.last_seen).total_seconds() > idle_s or (
        now - found.created_at
    ).total_seconds() > max_s
    if expired or user is None or user.disabled:
        db.delete(found)
        return None
    found.last_seen = now
    return Principal(user.username, Role(user.role), found.csrf_token)


def close_session(db: DbSession, token: str | None) -> None:
    if token:
        db.execute(delete(Session).where(Session.token_hash == _digest(token)))


def csrf_ok(principal: Principal, sent: str | None) -> bool:
    """Whether the request carried this session's CSRF token (constant-time compare)."""
    return bool(sent) and hmac.compare_digest(principal.csrf_token, sent or "")


def set_password(db: DbSession, username: str, password: str) -> None:
    """Replace a user's password and end their sessions (the caller commits)."""
    user = db.get(User, username)
    if user is None:
        raise AuthError(f"no user {username}")
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AuthError(f"passwords are {MIN_PASSWORD}-{MAX_PASSWORD} characters")
    user.password_hash = _HASHER.hash(password)
    user.failed_logins = 0
    user.locked_until = None
    end_sessions(db, username)


def end_sessions(db: DbSession, username: str) -> None:
    """Log a user out everywhere (the caller commits)."""
    db.execute(delete(Session).where(Session.username == username))


def has_users(db: DbSession) -> bool:
    return db.scalars(select(User.username).limit(1)).first() is not None
