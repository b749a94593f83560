"""RFC 9457 problem details: the one way every app here reports an HTTP error.

Apps call `install_problem_handlers(app)` once and raise `Problem` from anywhere in a request;
validation errors, unknown routes and unexpected exceptions come out in the same shape, so a
client (or the proxy comparing two upstreams) never has to parse two error formats.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = [
    "PROBLEM_JSON",
    "Problem",
    "ProblemDetails",
    "install_problem_handlers",
    "problem_response",
    "problem_responses",
]

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


class FieldProblem(BaseModel):
    """One invalid field of a request: where it is (dotted) and what is wrong with it."""

    field: str
    message: str


class ProblemDetails(BaseModel):
    """The body of every error answer, as the OpenAPI documents declare it (RFC 9457).

    Extension members (`errors`, `code`, `product_ids`, ...) may be added, as the RFC allows.
    """

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldProblem] | None = None


_PROBLEM_REF = {"$ref": "#/components/schemas/ProblemDetails"}


def _problem_response_doc(status: int, description: str | None = None) -> dict[str, Any]:
    return {
        "description": description or _TITLES.get(status, "Error"),
        "content": {PROBLEM_JSON: {"schema": _PROBLEM_REF}},
    }


def problem_responses(
    *statuses: int, descriptions: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route for the problem statuses it answers with, e.g.
    `problem_responses(401, 404, descriptions={404: "no such product"})`.

    The schema they refer to is registered by `install_problem_handlers`.
    """
    descriptions = descriptions or {}
    return {status: _problem_response_doc(status, descriptions.get(status)) for status in statuses}


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


_FASTAPI_422_REF = "#/components/schemas/HTTPValidationError"


def _document_problems(app: FastAPI) -> None:
    """Make `app`'s OpenAPI document say what these handlers do.

    It registers the ProblemDetails schema that `problem_responses` refers to, replaces
    FastAPI's own 422 (a JSON body with a `detail` list, which this app never sends) by the
    problem+json answer `_on_validation` gives, and adds the 400 FastAPI answers (through
    `_on_http_error`) to a JSON body it cannot even parse.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = build()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        problem = ProblemDetails.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(problem.pop("$defs", {}))
        schemas["ProblemDetails"] = problem
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.get("responses", {})
                default = responses.get("422", {}).get("content", {}).get("application/json", {})
                if default.get("schema", {}).get("$ref") == _FASTAPI_422_REF:
                    responses["422"] = _problem_response_doc(
                        422, "The request is not valid: each invalid field is in `errors`."
                    )
                body = operation.get("requestBody", {}).get("content", {})
                if "application/json" in body and "400" not in responses:
                    responses["400"] = _problem_response_doc(
                        400, "The body could not be parsed (it is not UTF-8 text, say)."
                    )
        if _FASTAPI_422_REF not in json.dumps(document):
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error `app` returns a problem+json body, and its OpenAPI document say so."""
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
    _document_problems(app)
