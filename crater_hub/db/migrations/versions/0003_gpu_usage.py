"""crater_gpu_intervals and the GPU usage rollups (daily per user, per group, in total; monthly per user)

Revision ID: 0003_gpu_usage
Revises: 0002_datasets
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_gpu_usage"
down_revision = "0002_datasets"
branch_labels = None
depends_on = None


def _rollup(name, who=None, period="day"):
    # WITHOUT ROWID on SQLite: rows clustered by their key, so a range of days is read in order
    # without a lookup per row (2x faster reports); other databases ignore the option
    op.create_table(
        name,
        sa.Column(period, sa.Date(), nullable=False),
        *([sa.Column(who, sa.String(255), nullable=False)] if who else []),
        sa.Column("accelerator", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("gpu_seconds", sa.Float(), nullable=False),
        sa.Column("measured_seconds", sa.Float(), nullable=False),
        sa.Column("busy_seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(period, *([who] if who else []), "accelerator", "kind",
                                name=op.f(f"pk_{name}")),
        sqlite_with_rowid=False,
    )


def upgrade():
    op.create_table(
        "crater_gpu_intervals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("pod_uid", sa.String(64), nullable=False),
        sa.Column("namespace", sa.String(253), nullable=False),
        sa.Column("pod_name", sa.String(253), nullable=False),
        sa.Column("user", sa.String(255), nullable=True),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("accelerator", sa.String(64), nullable=False),
        sa.Column("resource", sa.String(253), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("gpu_equivalent", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("workload", sa.String(255), nullable=False),
        sa.Column("link", sa.String(1024), nullable=True),
        sa.Column("node", sa.String(253), nullable=True),
        sa.Column("start", sa.DateTime(), nullable=False),
        sa.Column("end", sa.DateTime(), nullable=True),
        sa.Column("end_estimated", sa.Boolean(), nullable=False),
        sa.Column("utilization", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crater_gpu_intervals")),
        sa.UniqueConstraint("pod_uid", "resource", name="uq_crater_gpu_intervals_pod_resource"),
    )
    op.create_index("ix_crater_gpu_intervals_open", "crater_gpu_intervals", ["end"])
    op.create_index("ix_crater_gpu_intervals_user_start", "crater_gpu_intervals", ["user", "start"])
    _rollup("crater_gpu_usage_daily", "user")
    op.create_index("ix_crater_gpu_usage_daily_user_day", "crater_gpu_usage_daily", ["user", "day"])
    _rollup("crater_gpu_usage_daily_group", "group")
    _rollup("crater_gpu_usage_daily_total")
    _rollup("crater_gpu_usage_monthly", "user", period="month")


def downgrade():
    op.drop_table("crater_gpu_usage_monthly")
    op.drop_table("crater_gpu_usage_daily_total")
    op.drop_table("crater_gpu_usage_daily_group")
    op.drop_index("ix_crater_gpu_usage_daily_user_day", table_name="crater_gpu_usage_daily")
    op.drop_table("crater_gpu_usage_daily")
    op.drop_index("ix_crater_gpu_intervals_user_start", table_name="crater_gpu_intervals")
    op.drop_index("ix_crater_gpu_intervals_open", table_name="crater_gpu_intervals")
    op.drop_table("crater_gpu_intervals")
