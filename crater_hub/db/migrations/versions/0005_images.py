"""crater_images and crater_image_commits

Revision ID: 0005_images
Revises: 0001_jobs
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_images"
down_revision = "0001_jobs"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "crater_images",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("tag", sa.String(128), nullable=False),
        sa.Column("reference", sa.String(1024), nullable=False),
        sa.Column("digest", sa.String(100), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("source_detail", sa.JSON(), nullable=False),
        sa.Column("shared_users", sa.JSON(), nullable=False),
        sa.Column("shared_groups", sa.JSON(), nullable=False),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crater_images")),
    )
    op.create_index("ix_crater_images_owner", "crater_images", ["owner"])
    op.create_table(
        "crater_image_commits",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("requester", sa.String(255), nullable=False),
        sa.Column("server", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("tag", sa.String(128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("reference", sa.String(1024), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("log", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(100), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("image_id", sa.Integer(), nullable=True),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("finished", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crater_image_commits")),
    )
    op.create_index("ix_crater_image_commits_owner", "crater_image_commits", ["owner"])


def downgrade():
    op.drop_index("ix_crater_image_commits_owner", "crater_image_commits")
    op.drop_table("crater_image_commits")
    op.drop_index("ix_crater_images_owner", "crater_images")
    op.drop_table("crater_images")
