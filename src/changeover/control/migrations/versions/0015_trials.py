"""trials (an update run on a build machine before its diff), the instance a trial runs,
and the image setting that makes a diff wait for a passed trial.

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD/DROP COLUMN, never batch mode: SQLite's rebuilt instances table would lose
    # its triggers and the allocation indexes' DESC keys (see 0008 and 0010).
    op.add_column(
        "images",
        sa.Column("require_trial", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("instances", sa.Column("trial_id", sa.Integer(), nullable=True))
    op.create_table(
        "trials",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("update_id", sa.Integer(), sa.ForeignKey("updates.id"), nullable=False),
        sa.Column("fleet_id", sa.Integer(), sa.ForeignKey("fleets.id"), nullable=False),
        sa.Column("profile_id", sa.Integer(), sa.ForeignKey("profiles.id"), nullable=False),
        sa.Column("host_name", sa.String(64), nullable=True),
        sa.Column("instance_id", sa.Integer(), nullable=True),
        sa.Column("hold_s", sa.Float(), nullable=False),
        sa.Column("ready_timeout_s", sa.Float(), nullable=False),
        sa.Column("result", sa.String(16), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("wake_at", sa.Float(), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
    )
    op.create_index("ix_trials_update_id", "trials", ["update_id"])
    op.create_index("ix_trials_status", "trials", ["status"])


def downgrade() -> None:
    op.drop_index("ix_trials_status", table_name="trials")
    op.drop_index("ix_trials_update_id", table_name="trials")
    op.drop_table("trials")
    op.execute("ALTER TABLE instances DROP COLUMN trial_id")
    op.execute("ALTER TABLE images DROP COLUMN require_trial")
