"""Use cases of the users capability: register, authenticate, look up."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from legacy_monolith.users.models import User
from legacy_monolith.users.schemas import Registration

# Argon2id with the library's defaults (RFC 9106 low-memory profile): slow and salted.
_hasher = PasswordHasher()


@cache
def _dummy_hash() -> str:
    """Verified against when the email is unknown, so a login takes as long either way."""
    return _hasher.hash("not-a-real-password")


class EmailTaken(Exception):
    """Another account already uses this email."""


@dataclass(frozen=True)
class UserSummary:
    """What other capabilities may know about a user."""

    id: int
    email: str
    name: str


def _summary(user: User) -> UserSummary:
    return UserSummary(id=user.id, email=user.email, name=user.name)


def register(session: Session, registration: Registration) -> UserSummary:
    """Create an account; raise EmailTaken when the email is in use (case-insensitively)."""
    email = registration.email.strip().lower()
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise EmailTaken(email)
    user = User(
        email=email, name=registration.name, password_hash=_hasher.hash(registration.password)
    )
    session.add(user)
    try:
        session.commit()
    except IntegrityError as exc:  # a concurrent registration won the race
        session.rollback()
        raise EmailTaken(email) from exc
    return _summary(user)


def authenticate(session: Session, email: str, password: str) -> UserSummary | None:
    """Return the user whose credentials these are, or None."""
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    try:
        _hasher.verify(user.password_hash if user else _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return None
    return _summary(user) if user else None


def find_user(session: Session, user_id: int) -> UserSummary | None:
    """Look a user up by id."""
    user = session.get(User, user_id)
    return _summary(user) if user else None
