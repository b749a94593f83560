"""RFC 9457 problem details: the one way every app here reports an HTTP error.

Apps call `install_problem_handlers(app)` once and raise `Problem` from anywhere in a request;
validation errors, unknown routes and unexpected exceptions come out in the same shape, so a
client (or the proxy comparing two upstreams) never has to parse two error formats.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["PROBLEM_JSON", "Problem", "install_problem_handlers", "problem_response"]

PROBLEM_JSON = "application/problem+json"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Problem(Exception):
    """An error a handler wants the client to see, with a status and a human-readable detail.

    `extra` members are added to the body (RFC 9457 extension members), e.g. `errors`.
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        type_: str = "about:blank",
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or _TITLES.get(status, "Error")
        self.type = type_
        self.headers = headers
        self.extra = extra


def problem_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    type_: str = "about:blank",
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """Build an `application/problem+json` response."""
    body: dict[str, Any] = {
        "type": type_,
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if instance is not None:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field_errors(errors: Sequence[Any]) -> list[dict[str, str]]:
    fields = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ()) if part != "body"]
        fields.append({"field": ".".join(location) or "body", "message": str(error.get("msg"))})
    return fields


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(
        exc.status,
        exc.detail,
        title=exc.title,
        type_=exc.type,
        instance=request.url.path,
        headers=exc.headers,
        **exc.extra,
    )


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _field_errors(exc.errors())
    listed = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return problem_response(
        422,
        f"The request is not valid: {listed}.",
        instance=request.url.path,
        errors=errors,
    )


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"No resource at {request.url.path}."
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}."
    headers = dict(exc.headers) if exc.headers else None
    return problem_response(exc.status_code, detail, instance=request.url.path, headers=headers)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    return problem_response(
        500,
        "The server failed to handle this request; it has been logged.",
        instance=request.url.path,
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error `app` returns a problem+json body."""
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
