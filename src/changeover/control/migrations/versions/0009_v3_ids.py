"""v3 ids: seed 001's string ids registered for environments, applications, builds, fleets.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "v3_ids",
        sa.Column("kind", sa.String(length=32), primary_key=True),
        sa.Column("public_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("local_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("kind", "local_id", name="uq_v3_ids_local"),
    )


def downgrade() -> None:
    op.drop_table("v3_ids")
