"""content_places: where the content tree of the replicas of one database lives, as the
first one recorded it (``control.content_place``), so that a replica on a disk of its own
without the bucket refuses to start.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "content_places",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("place", sa.String(600), nullable=False),
        sa.Column("recorded_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("content_places")
