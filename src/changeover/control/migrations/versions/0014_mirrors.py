"""mirrors (seed 000's mirror profiles) and when a profile's version last changed.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("profiles") as t:
        t.add_column(sa.Column("rebound_at", sa.Float(), nullable=True))
        t.add_column(sa.Column("rebound_by", sa.String(200), nullable=True))
    op.create_table(
        "mirrors",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("image_id", sa.Integer(), sa.ForeignKey("images.id"), nullable=False),
        sa.Column("branch", sa.String(64), nullable=False),
        sa.Column(
            "profile_a_id", sa.Integer(), sa.ForeignKey("profiles.id"), nullable=False, unique=True
        ),
        sa.Column(
            "profile_b_id", sa.Integer(), sa.ForeignKey("profiles.id"), nullable=False, unique=True
        ),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("mirrors")
    with op.batch_alter_table("profiles") as t:
        t.drop_column("rebound_by")
        t.drop_column("rebound_at")
