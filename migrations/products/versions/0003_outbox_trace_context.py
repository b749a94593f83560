"""The outbox keeps each event's trace context, so the relay and the other side's apply join
the trace of the write that made the event.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("products_outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("trace_context", sa.String(length=55), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("products_outbox", schema=None) as batch_op:
        batch_op.drop_column("trace_context")
