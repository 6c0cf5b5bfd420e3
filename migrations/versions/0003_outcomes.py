"""Outcomes of executed actions, measured results on actions, and policy versions.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add actions.result and the outcomes and policy_versions tables."""
    with op.batch_alter_table("actions") as batch:
        batch.add_column(sa.Column("result", sa.JSON))
    op.create_table(
        "outcomes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("action_id", sa.Integer, sa.ForeignKey("actions.id", ondelete="CASCADE"), nullable=False,
                  unique=True),
        sa.Column("scored_at", sa.DateTime, nullable=False),
        sa.Column("window_s", sa.Float, nullable=False),
        sa.Column("success", sa.Boolean, nullable=False),
        sa.Column("reward", sa.Float, nullable=False),
        sa.Column("goal", sa.String(16), nullable=False),
        sa.Column("detail", sa.JSON),
    )
    op.create_table(
        "policy_versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("parent", sa.String(64)),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("activated_at", sa.DateTime),
        sa.Column("metrics", sa.JSON),
    )


def downgrade() -> None:
    """Drop them again."""
    op.drop_table("policy_versions")
    op.drop_table("outcomes")
    with op.batch_alter_table("actions") as batch:
        batch.drop_column("result")
