"""Inventory: hosts, scans, host snapshots and VM samples.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the inventory tables."""
    op.create_table(
        "hosts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("uri", sa.Text, nullable=False),
        sa.Column("maintenance", sa.Boolean, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("added_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "scans",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("ok_hosts", sa.Integer, nullable=False),
        sa.Column("failed_hosts", sa.Integer, nullable=False),
    )
    op.create_table(
        "host_snapshots",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("scan_id", sa.Integer, sa.ForeignKey("scans.id", ondelete="CASCADE"), nullable=False),
        sa.Column("host_id", sa.Integer, sa.ForeignKey("hosts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("taken_at", sa.DateTime, nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("cpus", sa.Integer, nullable=False),
        sa.Column("cpu_mhz", sa.Integer, nullable=False),
        sa.Column("memory_mib", sa.Integer, nullable=False),
        sa.Column("free_memory_mib", sa.Integer),
        sa.Column("cpu_model", sa.Text, nullable=False),
        sa.Column("hostname", sa.Text, nullable=False),
        sa.Column("libvirt_version", sa.String(32), nullable=False),
        sa.Column("hypervisor", sa.String(64), nullable=False),
        sa.Column("detail", sa.JSON),
    )
    op.create_index("ix_host_snapshots_scan_id", "host_snapshots", ["scan_id"])
    op.create_index("ix_host_snapshots_taken_at", "host_snapshots", ["taken_at"])
    op.create_index("ix_host_snapshots_host_taken", "host_snapshots", ["host_id", "taken_at"])
    op.create_table(
        "vm_samples",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("snapshot_id", sa.Integer, sa.ForeignKey("host_snapshots.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("vcpus", sa.Integer, nullable=False),
        sa.Column("max_vcpus", sa.Integer, nullable=False),
        sa.Column("memory_mib", sa.Integer, nullable=False),
        sa.Column("current_memory_mib", sa.Integer, nullable=False),
        sa.Column("balloon_current_mib", sa.Integer),
        sa.Column("balloon_maximum_mib", sa.Integer),
        sa.Column("rss_mib", sa.Integer),
        sa.Column("unused_mib", sa.Integer),
        sa.Column("available_mib", sa.Integer),
        sa.Column("usable_mib", sa.Integer),
        sa.Column("swap_in_mib", sa.Integer),
        sa.Column("swap_out_mib", sa.Integer),
        sa.Column("major_faults", sa.BigInteger),
        sa.Column("cpu_time_ns", sa.BigInteger),
        sa.Column("detail", sa.JSON),
    )
    op.create_index("ix_vm_samples_snapshot_id", "vm_samples", ["snapshot_id"])


def downgrade() -> None:
    """Drop the inventory tables."""
    for table in ("vm_samples", "host_snapshots", "scans", "hosts"):
        op.drop_table(table)
