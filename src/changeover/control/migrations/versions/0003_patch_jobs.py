"""patch jobs: jobs, their keyed actions, events and report addresses; allocation
weights per fleet and profile; the launch key of an instance a job started.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "patch_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("environment_id", sa.Integer(), nullable=False),
        sa.Column("application_id", sa.Integer(), nullable=False),
        sa.Column("method", sa.Integer(), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("comments", sa.Text(), nullable=False),
        sa.Column("start_at", sa.Float(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("progress", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("waiting_for", sa.Text(), nullable=False),
        sa.Column("wake_at", sa.Float(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["applications.id"],
        ),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environments.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("patch_jobs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_patch_jobs_application_id"), ["application_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_patch_jobs_status"), ["status"], unique=False)

    op.create_table(
        "patch_job_actions",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.Float(), nullable=False),
        sa.Column("applied_at", sa.Float(), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["patch_jobs.id"],
        ),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("patch_job_actions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_patch_job_actions_job_id"), ["job_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_patch_job_actions_applied_at"), ["applied_at"], unique=False
        )

    op.create_table(
        "patch_job_emails",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("progress_report", sa.Boolean(), nullable=False),
        sa.Column("result_report", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("changed_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["patch_jobs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("patch_job_emails", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_patch_job_emails_job_id"), ["job_id"], unique=False)

    op.create_table(
        "patch_job_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("mailed_at", sa.Float(), nullable=True),
        sa.Column("hooked_at", sa.Float(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("retry_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["patch_jobs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("patch_job_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_patch_job_events_job_id"), ["job_id"], unique=False)

    op.create_table(
        "allocation_weights",
        sa.Column("fleet_id", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["fleet_id"],
            ["fleets.id"],
        ),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profiles.id"],
        ),
        sa.PrimaryKeyConstraint("fleet_id", "profile_id"),
    )
    op.create_table(
        "host_stage_requests",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("host_name", sa.String(length=64), nullable=False),
        sa.Column("profile_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["patch_jobs.id"]),
        sa.ForeignKeyConstraint(["profile_id"], ["profiles.id"]),
        sa.PrimaryKeyConstraint("job_id", "host_name", "profile_id"),
    )
    with op.batch_alter_table("host_stage_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_host_stage_requests_host_name"), ["host_name"], unique=False
        )
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("launch_key", sa.String(length=200), nullable=True))
        batch_op.create_index("ix_instances_launch_key", ["launch_key"], unique=True)
        batch_op.add_column(sa.Column("stop_signal", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("stop_timeout_s", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("state_saved_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("state_saved_at")
        batch_op.drop_column("stop_timeout_s")
        batch_op.drop_column("stop_signal")
        batch_op.drop_index("ix_instances_launch_key")
        batch_op.drop_column("launch_key")

    with op.batch_alter_table("host_stage_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_host_stage_requests_host_name"))
    op.drop_table("host_stage_requests")

    op.drop_table("allocation_weights")
    with op.batch_alter_table("patch_job_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patch_job_events_job_id"))

    op.drop_table("patch_job_events")
    with op.batch_alter_table("patch_job_emails", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patch_job_emails_job_id"))

    op.drop_table("patch_job_emails")
    with op.batch_alter_table("patch_job_actions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patch_job_actions_applied_at"))
        batch_op.drop_index(batch_op.f("ix_patch_job_actions_job_id"))

    op.drop_table("patch_job_actions")
    with op.batch_alter_table("patch_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patch_jobs_status"))
        batch_op.drop_index(batch_op.f("ix_patch_jobs_application_id"))

    op.drop_table("patch_jobs")
