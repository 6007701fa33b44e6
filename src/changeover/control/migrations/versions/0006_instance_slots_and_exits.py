"""instances: the state slot each one runs in on its host, and how its last process ended
(exit code or signal, exited / killed / crashed, and why it was stopped).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

COLUMNS = (
    ("slot", sa.Integer()),
    ("exit_code", sa.Integer()),
    ("exit_signal", sa.String(length=16)),
    ("exit_how", sa.String(length=16)),
    ("exit_reason", sa.String(length=32)),
    ("exited_at", sa.Float()),
)


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        for name, kind in COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
    if op.get_bind().dialect.name == "sqlite":  # the rebuilt table lost the DESC keys
        for name, scope in (
            ("ix_instances_alloc_fleet", "fleet_id"),
            ("ix_instances_alloc_profile", "profile_id"),
        ):
            op.drop_index(name, table_name="instances")
            op.create_index(
                name,
                "instances",
                [scope, sa.text("version_number DESC"), sa.text("players DESC"), "id"],
                sqlite_where=sa.text(
                    "state = 'ready' AND desired = 'running' AND players < capacity"
                ),
            )
