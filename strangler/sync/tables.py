"""The bookkeeping tables a side keeps for one synced entity, declared on that side's MetaData.

The capability that owns the entity owns these tables too (boundaries.toml says so): the
outbox lives in the same database as the rows, which is what lets a change and its event
commit together.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = ["SyncTables", "sync_tables"]


@dataclass(frozen=True)
class SyncTables:
    outbox: Table
    dead_letters: Table
    tombstones: Table
    relay_lease: Table


def sync_tables(metadata: MetaData, entity: str) -> SyncTables:
    outbox = Table(
        f"{entity}_outbox",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("event_id", String(36), nullable=False, unique=True),
        Column("entity_key", BigInteger, nullable=False),
        Column("version", Integer, nullable=False),
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
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("event_id", String(36), nullable=False),
        Column("entity_key", BigInteger, nullable=False),
        Column("version", Integer, nullable=False),
        Column("op", String(10), nullable=False),
        Column("data", Text, nullable=True),
        Column("reason", Text, nullable=False),
        Column("failed_at", Float, nullable=False),
    )
    tombstones = Table(
        f"{entity}_tombstones",
        metadata,
        Column("entity_key", BigInteger, primary_key=True, autoincrement=False),
        Column("version", Integer, nullable=False),
    )
    relay_lease = Table(
        f"{entity}_relay_lease",
        metadata,
        Column("name", String(50), primary_key=True),
        Column("holder", String(64), nullable=False),
        Column("expires_at", Float, nullable=False),
    )
    return SyncTables(outbox, dead_letters, tombstones, relay_lease)
