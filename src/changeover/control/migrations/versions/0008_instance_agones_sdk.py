"""instances: what a game told Agones' SDK — annotations, allocated, reserved, its own
player capacity (``capacity`` is then the places it takes now: 0 while allocated or
reserved, else the game's capacity or the profile's).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


# Plain ADD COLUMNs, not batch mode: on SQLite, batch mode would rebuild the table and
# recreate the allocation indexes (0004) without their DESC keys, and Server Allocate
# would sort the fleet again.
_ALLOC_INDEXES = (
    ("ix_instances_alloc_fleet", "fleet_id"),
    ("ix_instances_alloc_profile", "profile_id"),
)
ALLOCATABLE_SQL = "state = 'ready' AND desired = 'running' AND players < capacity"


def upgrade() -> None:
    op.add_column(
        "instances", sa.Column("sdk_annotations", sa.Text(), nullable=False, server_default="{}")
    )
    for name in ("sdk_allocated", "sdk_reserved"):
        op.add_column(
            "instances", sa.Column(name, sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.add_column("instances", sa.Column("sdk_player_capacity", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        for name in ("sdk_player_capacity", "sdk_reserved", "sdk_allocated", "sdk_annotations"):
            batch.drop_column(name)
    if op.get_bind().dialect.name == "sqlite":  # the rebuilt table lost the DESC keys
        for name, scope in _ALLOC_INDEXES:
            op.drop_index(name, table_name="instances")
            op.create_index(
                name,
                "instances",
                [scope, sa.text("version_number DESC"), sa.text("players DESC"), "id"],
                sqlite_where=sa.text(ALLOCATABLE_SQL),
            )
