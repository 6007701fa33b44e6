"""allocation indexes: each instance's image version number, copied from its profile, and
two partial indexes (by fleet, by profile) in Server Allocate's order, so that finding the
best candidates walks a few index entries instead of sorting every ready instance.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ALLOCATABLE_SQL = "state = 'ready' AND desired = 'running' AND players < capacity"


def upgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version_number", sa.Integer(), nullable=True))
    op.execute(
        "UPDATE instances SET version_number = (SELECT versions.number FROM profiles"
        " JOIN versions ON versions.id = profiles.version_id"
        " WHERE profiles.id = instances.profile_id)"
    )
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.alter_column("version_number", existing_type=sa.Integer(), nullable=False)
    for name, scope in (
        ("ix_instances_alloc_fleet", "fleet_id"),
        ("ix_instances_alloc_profile", "profile_id"),
    ):
        op.create_index(
            name,
            "instances",
            [scope, sa.text("version_number DESC"), sa.text("players DESC"), "id"],
            unique=False,
            sqlite_where=sa.text(ALLOCATABLE_SQL),
            postgresql_where=sa.text(ALLOCATABLE_SQL),
        )


def downgrade() -> None:
    op.drop_index("ix_instances_alloc_profile", table_name="instances")
    op.drop_index("ix_instances_alloc_fleet", table_name="instances")
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("version_number")
