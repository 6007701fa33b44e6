"""ended sessions by when they ended: a partial index (only ended and expired sessions have
``ended_at``), so that deleting those past their retention reads no open session and adds
nothing to an allocation's insert.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

ENDED_SQL = "ended_at IS NOT NULL"


def upgrade() -> None:
    op.create_index(
        "ix_sessions_ended_at",
        "sessions",
        ["ended_at"],
        unique=False,
        sqlite_where=sa.text(ENDED_SQL),
        postgresql_where=sa.text(ENDED_SQL),
    )


def downgrade() -> None:
    op.drop_index("ix_sessions_ended_at", table_name="sessions")
