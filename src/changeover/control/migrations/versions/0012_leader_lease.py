"""leader_leases: the lease that makes one control-plane replica the leader
(``control.leadership``), with its one row, so that taking it is always an UPDATE.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    leases = op.create_table(
        "leader_leases",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("holder_name", sa.String(300), nullable=False),
        sa.Column("term", sa.BigInteger(), nullable=False),
        sa.Column("acquired_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    op.bulk_insert(
        leases,
        [
            {
                "name": "control",
                "holder": "",
                "holder_name": "",
                "term": 0,
                "acquired_at": 0.0,
                "expires_at": 0.0,
            }
        ],
    )


def downgrade() -> None:
    op.drop_table("leader_leases")
