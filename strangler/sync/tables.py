"""The bookkeeping tables a side keeps for one synced entity, declared on that side's MetaData.

The capability that owns the entity owns these tables too (boundaries.toml says so): the
outbox lives in the same database as the rows, which is what lets a change and its event
commit together.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = ["COUNTER", "SyncTables", "sync_tables"]

COUNTER = BigInteger().with_variant(Integer(), "sqlite")
"""A 64-bit counter (ids of events, versions of rows): BIGINT on PostgreSQL, where INTEGER
is 32 bits and a busy outbox or a hot row reaches 2^31; INTEGER on SQLite, which is 64 bits
there and the only type an autoincrementing key may have."""


@dataclass(frozen=True)
class SyncTables:
    outbox: Table
    dead_letters: Table
    tombstones: Table
    relay_lease: Table
    writes: Table
    """One row: whether this side may take the entity's writes (strangler.sync.barrier)."""


def sync_tables(metadata: MetaData, entity: str) -> SyncTables:
    outbox = Table(
        f"{entity}_outbox",
        metadata,
        Column("id", COUNTER, primary_key=True, autoincrement=True),
        Column("event_id", String(36), nullable=False, unique=True),
        Column("entity_key", BigInteger, nullable=False),
        Column("version", COUNTER, nullable=False),
        Column("op", String(10), nullable=False),
        Column("data", Text, nullable=True),
        Column("created_at", Float, nullable=False),
        Column("delivered_at", Float, nullable=True),
        # W3C traceparent of the write that made the event (None outside any trace)
        Column("trace_context", String(55), nullable=True),
        Index(f"ix_{entity}_outbox_pending", "delivered_at", "id"),
    )
    dead_letters = Table(
        f"{entity}_dead_letters",
        metadata,
        Column("id", COUNTER, primary_key=True, autoincrement=True),
        Column("event_id", String(36), nullable=False),
        Column("entity_key", BigInteger, nullable=False),
        Column("version", COUNTER, nullable=False),
        Column("op", String(10), nullable=False),
        Column("data", Text, nullable=True),
        Column("reason", Text, nullable=False),
        Column("failed_at", Float, nullable=False),
        # Set once a reconcile found both sides agreeing after the event failed: the write
        # it carried is no longer missing on the other side. Writes may not change sides
        # while a dead letter is unresolved (strangler.write_switch).
        Column("resolved_at", Float, nullable=True),
        # The outbox id the event had: an unresolved dead letter keeps the outbox position
        # "pending" for read-your-writes, since the other side lacks its write.
        Column("outbox_id", COUNTER, nullable=True),
    )
    tombstones = Table(
        f"{entity}_tombstones",
        metadata,
        Column("entity_key", BigInteger, primary_key=True, autoincrement=False),
        Column("version", COUNTER, nullable=False),
    )
    relay_lease = Table(
        f"{entity}_relay_lease",
        metadata,
        Column("name", String(50), primary_key=True),
        Column("holder", String(64), nullable=False),
        Column("expires_at", Float, nullable=False),
    )
    writes = Table(
        f"{entity}_writes",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),  # always 1: one row
        # True: writes may commit here; False: they may not; None: follow the phase.
        Column("here", Boolean, nullable=True),
        Column("changed_at", Float, nullable=True),
    )
    return SyncTables(outbox, dead_letters, tombstones, relay_lease, writes)
