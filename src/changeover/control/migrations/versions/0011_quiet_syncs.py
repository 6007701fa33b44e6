"""hosts.desired_at: when something of a host's desired state that is not an instance row
last changed (a build to stage, a fleet edit, a job over), and an index on instances
(host_id, changed_at): together they tell in one read whether an agent's sync has anything
new to answer (``fleet.quiet``).

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, not batch mode: see 0008 (the allocation indexes' DESC keys).
    op.add_column("hosts", sa.Column("desired_at", sa.Float(), nullable=True))
    op.create_index("ix_instances_host_changed", "instances", ["host_id", "changed_at"])


def downgrade() -> None:
    op.drop_index("ix_instances_host_changed", table_name="instances")
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("desired_at")
