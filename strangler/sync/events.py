"""The change event: what one write did to one row, in a form both sides apply the same way.

`version` grows on every write of the row at its source, so a target can tell newer from older
whatever order events arrive in; `event_id` names one emission, so a redelivery is recognised.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from strangler.fields import Key, Version

__all__ = ["ApplyOutcome", "ChangeEvent", "EventBatch", "OutcomeBatch"]


class ChangeEvent(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra={  # what _upserts_carry_data holds, said in the document
            "if": {"properties": {"op": {"const": "upsert"}}},
            "then": {"properties": {"data": {"type": "object"}}, "required": ["data"]},
        },
    )

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    entity: str
    key: Key
    version: Version
    op: Literal["upsert", "delete"]
    data: dict[str, Any] | None = None
    trace_context: str | None = Field(
        default=None,
        pattern=r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
        description="W3C traceparent of the write that made the event, for the apply's span",
    )

    @model_validator(mode="after")
    def _upserts_carry_data(self) -> ChangeEvent:
        if self.op == "upsert" and self.data is None:
            raise ValueError("an upsert event must carry data")
        return self


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[ChangeEvent] = Field(max_length=5000)


class ApplyOutcome(BaseModel):
    """applied: the target changed; duplicate: it already held this version or newer;
    rejected: the event can never apply (it is dead-lettered with `reason`)."""

    event_id: uuid.UUID
    outcome: Literal["applied", "duplicate", "rejected"]
    reason: str | None = None


class OutcomeBatch(BaseModel):
    results: list[ApplyOutcome]
