"""Products sync tables: outbox, dead letters, tombstones, relay lease.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "products_dead_letters",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("entity_key", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("op", sa.String(length=10), nullable=False),
        sa.Column("data", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("failed_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_products_dead_letters")),
    )
    op.create_table(
        "products_outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("entity_key", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("op", sa.String(length=10), nullable=False),
        sa.Column("data", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("delivered_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_products_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_products_outbox_event_id")),
    )
    with op.batch_alter_table("products_outbox", schema=None) as batch_op:
        batch_op.create_index("ix_products_outbox_pending", ["delivered_at", "id"], unique=False)

    op.create_table(
        "products_relay_lease",
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_products_relay_lease")),
    )
    op.create_table(
        "products_tombstones",
        sa.Column("entity_key", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("entity_key", name=op.f("pk_products_tombstones")),
    )


def downgrade() -> None:
    op.drop_table("products_tombstones")
    op.drop_table("products_relay_lease")
    with op.batch_alter_table("products_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_products_outbox_pending")

    op.drop_table("products_outbox")
    op.drop_table("products_dead_letters")
