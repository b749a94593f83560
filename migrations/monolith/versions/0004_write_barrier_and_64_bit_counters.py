"""The write barrier row, dead letters that can be resolved, and 64-bit ids and versions.

`products_writes` holds one row saying whether this side may take product writes (None:
follow the phase), which every product write reads in its own transaction and the write
switch flips (strangler.sync.barrier). A dead letter is resolved once a reconcile finds both
sides agreeing after it, and keeps its outbox id (an unresolved one holds read-your-writes
pins); writes may not change sides while one is unresolved. Event ids and versions become
BIGINT on PostgreSQL, where INTEGER stops at 2^31 - 1 (a busy outbox, or a hot row, gets
there); SQLite's INTEGER is 64 bits already, so nothing changes there.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COUNTER = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_COUNTERS = (
    ("products", "version"),
    ("products_outbox", "id"),
    ("products_outbox", "version"),
    ("products_dead_letters", "id"),
    ("products_dead_letters", "version"),
    ("products_tombstones", "version"),
)


def upgrade() -> None:
    writes = op.create_table(
        "products_writes",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("here", sa.Boolean(), nullable=True),
        sa.Column("changed_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_products_writes")),
    )
    op.bulk_insert(writes, [{"id": 1, "here": None, "changed_at": None}])
    with op.batch_alter_table("products_dead_letters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resolved_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("outbox_id", _COUNTER, nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        for table, column in _COUNTERS:
            op.alter_column(table, column, type_=sa.BigInteger(), existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, column in _COUNTERS:
            op.alter_column(table, column, type_=sa.Integer(), existing_nullable=False)
    with op.batch_alter_table("products_dead_letters", schema=None) as batch_op:
        batch_op.drop_column("outbox_id")
        batch_op.drop_column("resolved_at")
    op.drop_table("products_writes")
