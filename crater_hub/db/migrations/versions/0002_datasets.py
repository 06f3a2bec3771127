"""crater_datasets and crater_dataset_shares

Revision ID: 0002_datasets
Revises: 0001_jobs
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_datasets"
down_revision = "0001_jobs"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "crater_datasets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("space", sa.String(300), nullable=False),
        sa.Column("path", sa.String(300), nullable=False),
        sa.Column("editable", sa.Boolean(), nullable=False),
        sa.Column("size", sa.String(32), nullable=True),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("updated", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crater_datasets")),
        sa.UniqueConstraint("owner", "name", name="uq_crater_datasets_owner_name"),
    )
    op.create_table(
        "crater_dataset_shares",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["dataset_id"], ["crater_datasets.id"], ondelete="CASCADE",
                                name=op.f("fk_crater_dataset_shares_dataset_id_crater_datasets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crater_dataset_shares")),
        sa.UniqueConstraint("dataset_id", "kind", "name", name="uq_crater_dataset_shares_grant"),
    )
    op.create_index(op.f("ix_crater_dataset_shares_dataset_id"), "crater_dataset_shares",
                    ["dataset_id"])
    op.create_index("ix_crater_dataset_shares_kind_name", "crater_dataset_shares", ["kind", "name"])


def downgrade():
    op.drop_index("ix_crater_dataset_shares_kind_name", table_name="crater_dataset_shares")
    op.drop_index(op.f("ix_crater_dataset_shares_dataset_id"), table_name="crater_dataset_shares")
    op.drop_table("crater_dataset_shares")
    op.drop_table("crater_datasets")
