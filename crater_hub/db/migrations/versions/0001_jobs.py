"""crater_jobs and crater_job_transitions

Revision ID: 0001_jobs
Revises:
Create Date: 2025-01-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_jobs"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "crater_jobs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("profile", sa.String(255), nullable=False),
        sa.Column("accelerator", sa.String(64), nullable=True),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("cpu", sa.String(32), nullable=True),
        sa.Column("cpu_limit", sa.String(32), nullable=True),
        sa.Column("memory", sa.String(32), nullable=True),
        sa.Column("memory_limit", sa.String(32), nullable=True),
        sa.Column("image", sa.String(1024), nullable=False),
        sa.Column("command", sa.JSON(), nullable=False),
        sa.Column("env", sa.JSON(), nullable=False),
        sa.Column("priority", sa.String(64), nullable=False),
        sa.Column("priority_value", sa.Integer(), nullable=False),
        sa.Column("best_effort", sa.Boolean(), nullable=False),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("max_runtime", sa.Integer(), nullable=False),
        sa.Column("shape", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("k8s_job", sa.String(63), nullable=True),
        sa.Column("dispatched", sa.Boolean(), nullable=False),
        sa.Column("cleaned", sa.Boolean(), nullable=False),
        sa.Column("node", sa.String(253), nullable=True),
        sa.Column("log_tail", sa.Text(), nullable=True),
        sa.Column("submitted", sa.DateTime(), nullable=False),
        sa.Column("admitted", sa.DateTime(), nullable=True),
        sa.Column("started", sa.DateTime(), nullable=True),
        sa.Column("finished", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crater_jobs")),
    )
    op.create_index("ix_crater_jobs_owner_id", "crater_jobs", ["owner", "id"])
    op.create_index("ix_crater_jobs_state", "crater_jobs", ["state"])
    op.create_table(
        "crater_job_transitions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["crater_jobs.id"], ondelete="CASCADE",
                                name=op.f("fk_crater_job_transitions_job_id_crater_jobs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crater_job_transitions")),
    )
    op.create_index(op.f("ix_crater_job_transitions_job_id"), "crater_job_transitions", ["job_id"])


def downgrade():
    op.drop_index(op.f("ix_crater_job_transitions_job_id"), table_name="crater_job_transitions")
    op.drop_table("crater_job_transitions")
    op.drop_index("ix_crater_jobs_state", table_name="crater_jobs")
    op.drop_index("ix_crater_jobs_owner_id", table_name="crater_jobs")
    op.drop_table("crater_jobs")
