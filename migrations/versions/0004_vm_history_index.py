"""An index for one VM's history: (uuid, snapshot_id) on vm_samples.

A VM's week is then read by its uuid, not by scanning every VM's samples (a fleet's history grows to
hundreds of millions of rows). Same DDL on SQLite and PostgreSQL.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ix_vm_samples_uuid_snapshot."""
    op.create_index("ix_vm_samples_uuid_snapshot", "vm_samples", ["uuid", "snapshot_id"])


def downgrade() -> None:
    """Drop it."""
    op.drop_index("ix_vm_samples_uuid_snapshot", table_name="vm_samples")
