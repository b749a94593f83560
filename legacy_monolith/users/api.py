"""HTTP routes of the users capability."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from legacy_monolith.users import service
from legacy_monolith.users.schemas import AccessToken, Credentials, Registration, UserOut
from strangler.auth import CurrentUserId
from strangler.db import ReadSession, WriteSession
from strangler.problems import Problem, problem_responses
from strangler.tokens import TokenIssuer

router = APIRouter(prefix="/users", tags=["users"])


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    responses=problem_responses(409, descriptions={409: "An account has this email."}),
)
def register(body: Registration, session: WriteSession) -> UserOut:
    try:
        user = service.register(session, body)
    except service.EmailTaken as exc:
        raise Problem(409, f"An account with the email {exc} already exists.") from exc
    return UserOut(id=user.id, email=user.email, name=user.name)


@router.post(
    "/login",
    response_model=AccessToken,
    responses=problem_responses(401, descriptions={401: "The email or password is wrong."}),
)
def login(body: Credentials, session: ReadSession, request: Request) -> AccessToken:
    user = service.authenticate(session, body.email, body.password)
    if user is None:
        raise Problem(
            401, "The email or password is wrong.", headers={"WWW-Authenticate": "Bearer"}
        )
    issuer: TokenIssuer = request.app.state.token_issuer
    return AccessToken(access_token=issuer.issue(str(user.id)))


@router.get("/me", response_model=UserOut, responses=problem_responses(401))
def me(user_id: CurrentUserId, session: ReadSession) -> UserOut:
    user = service.find_user(session, user_id)
    if user is None:
        raise Problem(
            401,
            "The account this token was issued for no longer exists.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return UserOut(id=user.id, email=user.email, name=user.name)
