"""Talking to the proxy's admin API from the CLI, and where the admin token comes from.

The token is `STRANGLER_ADMIN_TOKEN` (or the proxy's own `PROXY_ADMIN_TOKEN`), else the file
`strangler up` writes (var/admin-token, mode 0600) when neither is set.
"""

from __future__ import annotations

from typing import Any

import httpx

from strangler.console import fail
from strangler.settings import CliSettings, read_or_create_secret

__all__ = ["AdminApiError", "AdminClient", "admin_or_fail", "admin_token_for_up"]


def admin_token_for_up(settings: CliSettings | None = None) -> tuple[str, str]:
    """The token `strangler up` gives the proxy, and where an operator finds it."""
    settings = settings or CliSettings()
    if settings.admin_token is not None:
        return settings.admin_token.get_secret_value(), "STRANGLER_ADMIN_TOKEN"
    return read_or_create_secret(settings.admin_token_file), str(settings.admin_token_file)


class AdminApiError(Exception):
    """The admin API could not be used; the message says why and what to do."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


class AdminClient:
    """The admin API's calls the CLI makes. `actor` names the caller in the audit log (the
    proxy's dashboard steps through this same client, as "dashboard")."""

    def __init__(
        self,
        settings: CliSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        actor: str = "strangler-cli",
    ) -> None:
        token = settings.admin_token_value()
        if token is None:
            raise AdminApiError(
                "no admin token",
                "set STRANGLER_ADMIN_TOKEN, or run from the directory where `strangler up` "
                f"wrote {settings.admin_token_file}",
            )
        self._base = settings.proxy_url.rstrip("/")
        self._client = httpx.Client(
            base_url=self._base,
            headers={"Authorization": f"Bearer {token}", "X-Strangler-Actor": actor},
            timeout=10,
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._client.request(method, f"/_strangler{path}", **kwargs)
        except httpx.TransportError as exc:
            raise AdminApiError(
                f"cannot reach the proxy at {self._base}: {exc}",
                "start it with `strangler up`, or point STRANGLER_PROXY_URL at it",
            ) from exc
        if response.status_code == 401:
            raise AdminApiError("the proxy refused the admin token", "check STRANGLER_ADMIN_TOKEN")
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise AdminApiError(
                f"the proxy refused the request: {detail}", "fix the values and retry"
            )
        body: dict[str, Any] = response.json()
        return body

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/status")

    def change(self, capability: str, changes: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", f"/capabilities/{capability}", json=changes)

    def close_fence(
        self, capability: str, *, lease_seconds: float, drain_seconds: float
    ) -> dict[str, Any]:
        return self._call(
            "POST",
            f"/capabilities/{capability}/fence",
            json={"lease_seconds": lease_seconds, "drain_seconds": drain_seconds},
            timeout=drain_seconds + 5,  # the proxy answers only once writes in flight are done
        )

    def open_fence(self, capability: str, fence_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/capabilities/{capability}/fence/{fence_id}")


def admin_or_fail() -> AdminClient:
    """An admin client from the CLI settings, or the CLI's error saying what is missing."""
    try:
        return AdminClient(CliSettings())
    except AdminApiError as exc:
        raise fail(str(exc), exc.hint) from exc
