"""instances.changed_at: when a row last changed, by the database's clock, set by the
database itself (a trigger) on every insert and update, whoever writes it (ORM flushes,
bulk UPDATEs, the allocation lane). The reconciler reads only what changed since its last
pass (``patchjobs.job_view``). An index on (fleet_id, changed_at) serves that read, one on
(host_id, fleet_id) the slot choice of a new instance (``fleet.hosts.assign_slot``).

instances.standin_for: the lost host an instance stands in for (``fleet.standins``).

patch_jobs.summary: the job's progress per state and region, kept by the reconciler, so the
API, the dashboard and the reports read it without counting the fleet.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_ALLOC_INDEXES = (
    ("ix_instances_alloc_fleet", "fleet_id"),
    ("ix_instances_alloc_profile", "profile_id"),
)
ALLOCATABLE_SQL = "state = 'ready' AND desired = 'running' AND players < capacity"
# The clocks, in Unix seconds (SQLite 3.40 has no ``unixepoch('subsec')``); the same
# expressions as ``patchjobs.job_view`` reads.

_SQLITE_TRIGGERS = (
    # Recursive triggers are off in SQLite, so the inner UPDATE does not fire again; the
    # WHEN keeps it so even if someone turns them on.
    """CREATE TRIGGER instances_changed_insert AFTER INSERT ON instances BEGIN
    UPDATE instances SET changed_at = (julianday('now') - 2440587.5) * 86400.0
    WHERE id = NEW.id; END""",
    """CREATE TRIGGER instances_changed_update AFTER UPDATE ON instances
    WHEN NEW.changed_at IS OLD.changed_at BEGIN
    UPDATE instances SET changed_at = (julianday('now') - 2440587.5) * 86400.0
    WHERE id = NEW.id; END""",
)
_PG_TRIGGER = (
    """CREATE FUNCTION changeover_instance_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN NEW.changed_at := extract(epoch FROM clock_timestamp()); RETURN NEW; END $$""",
    """CREATE TRIGGER instances_changed BEFORE INSERT OR UPDATE ON instances
    FOR EACH ROW EXECUTE FUNCTION changeover_instance_changed()""",
)


def upgrade() -> None:
    # Plain ADD COLUMN, not batch mode: see 0008 (the allocation indexes' DESC keys).
    op.add_column(
        "instances", sa.Column("changed_at", sa.Float(), nullable=False, server_default="0")
    )
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute("UPDATE instances SET changed_at = (julianday('now') - 2440587.5) * 86400.0")
    else:
        op.execute("UPDATE instances SET changed_at = extract(epoch FROM clock_timestamp())")
    for statement in _SQLITE_TRIGGERS if sqlite else _PG_TRIGGER:
        op.execute(statement)
    op.create_index("ix_instances_fleet_changed", "instances", ["fleet_id", "changed_at"])
    op.create_index("ix_instances_host_fleet", "instances", ["host_id", "fleet_id"])
    op.add_column("patch_jobs", sa.Column("summary", sa.Text(), nullable=True))
    op.add_column("instances", sa.Column("standin_for", sa.String(length=64), nullable=True))


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute("DROP TRIGGER instances_changed_insert")
        op.execute("DROP TRIGGER instances_changed_update")
    else:
        op.execute("DROP TRIGGER instances_changed ON instances")
        op.execute("DROP FUNCTION changeover_instance_changed()")
    op.drop_index("ix_instances_host_fleet", table_name="instances")
    op.drop_index("ix_instances_fleet_changed", table_name="instances")
    with op.batch_alter_table("patch_jobs") as batch:
        batch.drop_column("summary")
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("standin_for")
        batch.drop_column("changed_at")
    if sqlite:  # the rebuilt table lost the DESC keys (see 0008)
        for name, scope in _ALLOC_INDEXES:
            op.drop_index(name, table_name="instances")
            op.create_index(
                name,
                "instances",
                [scope, sa.text("version_number DESC"), sa.text("players DESC"), "id"],
                sqlite_where=sa.text(ALLOCATABLE_SQL),
            )
