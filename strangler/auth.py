"""Who is calling: the bearer token on a request, verified, as a user id.

Every app that serves the shop's users (the monolith, the extracted services) uses this one
dependency; each puts its `TokenVerifier` on `app.state.token_verifier`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from strangler.problems import Problem
from strangler.tokens import InvalidToken, TokenVerifier

_bearer = HTTPBearer(auto_error=False)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _current_user_id(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> int:
    if credentials is None:
        raise Problem(401, "This endpoint needs a bearer token.", headers=_CHALLENGE)
    verifier: TokenVerifier = request.app.state.token_verifier
    try:
        subject = verifier.subject(credentials.credentials)
    except InvalidToken as exc:
        raise Problem(401, f"The bearer token was refused: {exc}.", headers=_CHALLENGE) from exc
    if not subject.isdigit():
        raise Problem(401, "The bearer token names no user of this shop.", headers=_CHALLENGE)
    return int(subject)


CurrentUserId = Annotated[int, Depends(_current_user_id)]
"""The id of the authenticated caller; 401 problem when the token is missing or bad."""
