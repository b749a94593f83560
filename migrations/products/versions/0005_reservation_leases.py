"""Reservations carry a lease: one whose order never confirmed it is released by the sweep.

Rows made before this revision keep no lease (NULL): nothing tells an abandoned one from one
whose order was recorded, since orders did not confirm their reservations then.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("reservations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_reservations_status_expires_at", "reservations", ["status", "expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_reservations_status_expires_at", table_name="reservations")
    with op.batch_alter_table("reservations", schema=None) as batch_op:
        batch_op.drop_column("expires_at")
