"""hosts.desired_at: when something of a host's desired state that is not an instance row
last changed (a build to stage, a fleet edit, a job over), and an index on instances
(host_id, changed_at): together they tell in one read whether an agent's sync has anything
new to answer (``fleet.quiet``). A partial index of live instances by host (and fleet and
slot): a sync reads a host's live instances, a new instance's slot those of its fleet
there, without the host's history of stopped ones. ix_instances_fleet_id and
ix_instances_host_id go: each is the first column of another index.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None
LIVE_SQL = "desired != 'stopped' OR state != 'stopped'"  # fleet.models.LIVE_SQL, as of now


def upgrade() -> None:
    # Plain ADD COLUMN, not batch mode: see 0008 (the allocation indexes' DESC keys).
    op.add_column("hosts", sa.Column("desired_at", sa.Float(), nullable=True))
    op.create_index("ix_instances_host_changed", "instances", ["host_id", "changed_at"])
    op.create_index(
        "ix_instances_host_live",
        "instances",
        ["host_id", "fleet_id", "slot"],
        sqlite_where=sa.text(LIVE_SQL),
        postgresql_where=sa.text(LIVE_SQL),
    )

    # Every instance write maintains each index: these two are prefixes of others
    # (ix_instances_fleet_changed, ix_instances_host_fleet), which serve their reads.
    op.drop_index("ix_instances_fleet_id", table_name="instances")
    op.drop_index("ix_instances_host_id", table_name="instances")


def downgrade() -> None:
    op.create_index("ix_instances_host_id", "instances", ["host_id"])
    op.create_index("ix_instances_fleet_id", "instances", ["fleet_id"])
    op.drop_index("ix_instances_host_live", table_name="instances")
    op.drop_index("ix_instances_host_changed", table_name="instances")
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("desired_at")
