"""Who may use the proxy's admin side: the bearer of PROXY_ADMIN_TOKEN, compared in constant time.

In a module of its own so the admin API and the dashboard, which the admin app includes, ask
for the token through the same dependency.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Header, Request

from strangler.problems import Problem

if TYPE_CHECKING:
    from proxy.app import ProxyRuntime

__all__ = ["Admin", "require_admin", "runtime_of"]


def runtime_of(request: Request) -> ProxyRuntime:
    runtime: ProxyRuntime = request.app.state.runtime
    return runtime


def require_admin(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    """The caller's name for the audit log (`actor@peer`); 401 problem+json without the token."""
    runtime = runtime_of(request)
    expected = runtime.admin_token
    if expected is None:
        raise Problem(401, "The admin API is disabled: start the proxy with PROXY_ADMIN_TOKEN set.")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), expected.encode()):
        raise Problem(
            401,
            "The admin API needs 'Authorization: Bearer <admin token>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    peer = request.client.host if request.client else "unknown"
    actor = request.headers.get("x-strangler-actor", "").strip()[:100]
    return f"{actor or 'admin-api'}@{peer}"


Admin = Annotated[str, Depends(require_admin)]
