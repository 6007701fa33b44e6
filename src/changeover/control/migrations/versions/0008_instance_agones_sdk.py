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


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(
            sa.Column("sdk_annotations", sa.Text(), nullable=False, server_default="{}")
        )
        batch.add_column(
            sa.Column("sdk_allocated", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("sdk_reserved", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("sdk_player_capacity", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        for name in ("sdk_player_capacity", "sdk_reserved", "sdk_allocated", "sdk_annotations"):
            batch.drop_column(name)
