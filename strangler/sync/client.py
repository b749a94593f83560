"""The HTTP client of a side's internal sync API (see strangler.sync.api)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from strangler.observability.outgoing import propagate_context
from strangler.sync.events import ApplyOutcome, ChangeEvent, OutcomeBatch
from strangler.sync.wire import JSON_LINES, MEDIA_TYPES, PYTHON_HASH, ImportReport

__all__ = ["SyncApiError", "SyncClient"]


class SyncApiError(Exception):
    """The side refused or could not be reached; `retryable` says whether trying again helps."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class SyncClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        entity: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.entity = entity
        self._http = httpx.Client(
            base_url=f"{self.base_url}/internal/sync/{entity}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout, connect=5.0),
            transport=transport,
            event_hooks={"request": [propagate_context]},
        )

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise SyncApiError(f"{self.base_url} unreachable: {exc!r}", retryable=True) from exc
        self._raise_for(response)
        return response.json()

    def _raise_for(self, response: httpx.Response) -> None:
        if response.status_code >= 500 or response.status_code == 429:
            raise SyncApiError(f"{self.base_url} answered {response.status_code}", retryable=True)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise SyncApiError(
                f"{self.base_url} refused ({response.status_code}): {detail}", retryable=False
            )

    def apply(self, events: Sequence[ChangeEvent]) -> list[ApplyOutcome]:
        payload = {"events": [e.model_dump(mode="json") for e in events]}
        return OutcomeBatch.model_validate(self._call("POST", "/events", json=payload)).results

    def bounds(self, *, count: bool = True) -> dict[str, Any]:
        """min, max and count of the keys (count None when not asked for), and what the side
        offers: `hashes` (row hashes) and `bulk_formats`."""
        params = {} if count else {"count": "false"}
        result: dict[str, Any] = self._call("GET", "/bounds", params=params)
        result.setdefault("hashes", [PYTHON_HASH])  # a side from before hashes were offered
        result.setdefault("bulk_formats", [JSON_LINES])
        return result

    def checksums(
        self, bounds: Sequence[tuple[int, int]], hash_name: str = PYTHON_HASH, buckets: int = 1
    ) -> list[dict[str, int]]:
        """Count and checksum of each range, each split into `buckets` (split_range's)."""
        body = {"bounds": [list(b) for b in bounds], "hash": hash_name, "buckets": buckets}
        result: list[dict[str, int]] = self._call("POST", "/checksums", json=body)["ranges"]
        return result

    def rows(self, lo: int, hi: int, hash_name: str = PYTHON_HASH) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call(
            "GET", "/rows", params={"lo": lo, "hi": hi, "hash": hash_name}
        )["rows"]
        return result

    def lag(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/lag")
        return result

    def dead_letters(self, limit: int = 20) -> list[dict[str, Any]]:
        """The unresolved dead letters (key, version, reason, failed_at), oldest first."""
        found: list[dict[str, Any]] = self._call("GET", "/dead-letters", params={"limit": limit})[
            "dead_letters"
        ]
        return found

    def resolve_dead_letters(self, before: float) -> int:
        """Mark resolved the dead letters that failed at or before `before`."""
        resolved: int = self._call("POST", "/dead-letters/resolve", json={"before": before})[
            "resolved"
        ]
        return resolved

    def writes(self) -> bool | None:
        """This side's write barrier (strangler.sync.barrier): True, False, or None."""
        here: bool | None = self._call("GET", "/writes")["here"]
        return here

    def set_writes(self, here: bool | None, *, wait_seconds: float = 10.0) -> None:
        """Open (True) or close (False) this side's write barrier; returns once the writes in
        flight there have finished."""
        self._call(
            "PUT",
            "/writes",
            json={"here": here, "wait_seconds": wait_seconds},
            timeout=wait_seconds + 5,
        )

    def export(
        self, after: int, limit: int, fmt: str = JSON_LINES
    ) -> tuple[bytes, int, int | None]:
        """(the chunk, its row count, its last key) of the rows after key `after`."""
        try:
            response = self._http.get(
                "/export", params={"after": after, "limit": limit, "format": fmt}
            )
        except httpx.TransportError as exc:
            raise SyncApiError(f"{self.base_url} unreachable: {exc!r}", retryable=True) from exc
        self._raise_for(response)
        last = response.headers.get("x-sync-last-key")
        return response.content, int(response.headers["x-sync-rows"]), int(last) if last else None

    def tombstones(self, after: int, limit: int) -> list[tuple[int, int]]:
        """(key, version) of the deletes this side holds after key `after`, in key order."""
        body = self._call("GET", "/tombstones", params={"after": after, "limit": limit})
        return [(int(key), int(version)) for key, version in body["tombstones"]]

    def import_(self, chunk: bytes, fmt: str = JSON_LINES) -> ImportReport:
        """Apply an exported chunk on this side."""
        result = self._call(
            "POST",
            "/import",
            params={"format": fmt},
            content=chunk,
            headers={"Content-Type": MEDIA_TYPES[fmt]},
        )
        return ImportReport(**result)

    def reemit(self, keys: Sequence[int], at_least: dict[int, int]) -> list[ChangeEvent]:
        body = self._call("POST", "/reemit", json={"keys": list(keys), "at_least": at_least})
        return [ChangeEvent.model_validate(e) for e in body["events"]]
