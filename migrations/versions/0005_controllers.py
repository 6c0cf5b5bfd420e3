"""Controllers' heartbeats: who runs, who leads, when each last ticked (``llmvirt controller run``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the controllers table."""
    op.create_table(
        "controllers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("last_tick_at", sa.DateTime, nullable=False),
        sa.Column("interval_s", sa.Float, nullable=False),
        sa.Column("leading_since", sa.DateTime),
    )


def downgrade() -> None:
    """Drop it."""
    op.drop_table("controllers")
