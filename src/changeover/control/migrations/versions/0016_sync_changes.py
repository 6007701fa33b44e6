"""instances.sync_changed_at: when something an agent's sync is told of an instance last
changed (its desired state, notice, slot, stop method, profile, fleet, host, trial, or
whether it still lives), by the database's clock, set by the same triggers as
``changed_at`` (0010). A draining instance's player count counts too (placement stops it
once empty). What Server Allocate writes (a running instance's players) does not: under
allocations every instance changes every few seconds, and each of those changes made its
host's next sync a full one instead of a quiet read (``fleet.quiet``). The index on
(host_id, changed_at) is replaced by one on (host_id, sync_changed_at).

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

# ruff: noqa: S608 -- the triggers' SQL is made of this module's constants, no input

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_SQLITE_CLOCK = "(julianday('now') - 2440587.5) * 86400.0"
_TOLD = (
    "desired",
    "state",
    "notice_reason",
    "notice_deadline",
    "slot",
    "stop_signal",
    "stop_timeout_s",
    "profile_id",
    "fleet_id",
    "host_id",
    "trial_id",
)
"""The columns an agent's answer is made of (``fleet.desired``), and ``state`` (liveness)."""


def _told_changed(old: str, new: str, distinct: str) -> str:
    terms = [f"{new}.{c} {distinct} {old}.{c}" for c in _TOLD]
    terms.append(f"({new}.desired = 'draining' AND {new}.players {distinct} {old}.players)")
    return " OR ".join(terms)


_SQLITE_UP = (
    "DROP TRIGGER instances_changed_insert",
    "DROP TRIGGER instances_changed_update",
    f"""CREATE TRIGGER instances_changed_insert AFTER INSERT ON instances BEGIN
    UPDATE instances SET changed_at = {_SQLITE_CLOCK}, sync_changed_at = {_SQLITE_CLOCK}
    WHERE id = NEW.id; END""",
    # One inner UPDATE for both stamps (recursive triggers are off: it fires no trigger).
    f"""CREATE TRIGGER instances_changed_update AFTER UPDATE ON instances
    WHEN NEW.changed_at IS OLD.changed_at BEGIN
    UPDATE instances SET changed_at = {_SQLITE_CLOCK},
    sync_changed_at = CASE WHEN {_told_changed("OLD", "NEW", "IS NOT")}
    THEN {_SQLITE_CLOCK} ELSE sync_changed_at END
    WHERE id = NEW.id; END""",
)
_SQLITE_DOWN = (
    "DROP TRIGGER instances_changed_insert",
    "DROP TRIGGER instances_changed_update",
    f"""CREATE TRIGGER instances_changed_insert AFTER INSERT ON instances BEGIN
    UPDATE instances SET changed_at = {_SQLITE_CLOCK} WHERE id = NEW.id; END""",
    f"""CREATE TRIGGER instances_changed_update AFTER UPDATE ON instances
    WHEN NEW.changed_at IS OLD.changed_at BEGIN
    UPDATE instances SET changed_at = {_SQLITE_CLOCK} WHERE id = NEW.id; END""",
)
_PG_UP = (
    f"""CREATE OR REPLACE FUNCTION changeover_instance_changed() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      NEW.changed_at := extract(epoch FROM clock_timestamp());
      IF TG_OP = 'INSERT' OR {_told_changed("OLD", "NEW", "IS DISTINCT FROM")} THEN
        NEW.sync_changed_at := NEW.changed_at;
      END IF;
      RETURN NEW;
    END $$""",
)
_PG_DOWN = (
    """CREATE OR REPLACE FUNCTION changeover_instance_changed() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN NEW.changed_at := extract(epoch FROM clock_timestamp()); RETURN NEW; END $$""",
)


def upgrade() -> None:
    # Plain ADD/DROP COLUMN, never batch mode (see 0015).
    op.add_column(
        "instances",
        sa.Column("sync_changed_at", sa.Float(), nullable=False, server_default="0"),
    )
    op.execute("UPDATE instances SET sync_changed_at = changed_at")
    sqlite = op.get_bind().dialect.name == "sqlite"
    for statement in _SQLITE_UP if sqlite else _PG_UP:
        op.execute(statement)
    op.drop_index("ix_instances_host_changed", table_name="instances")
    op.create_index("ix_instances_host_sync_changed", "instances", ["host_id", "sync_changed_at"])


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.drop_index("ix_instances_host_sync_changed", table_name="instances")
    op.create_index("ix_instances_host_changed", "instances", ["host_id", "changed_at"])
    for statement in _SQLITE_DOWN if sqlite else _PG_DOWN:
        op.execute(statement)
    op.drop_column("instances", "sync_changed_at")
