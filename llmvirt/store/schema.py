"""SQLAlchemy 2 tables of the store. Alembic migrations in ``migrations/`` create them.

Snapshots are history: one ``host_snapshots`` row per host per scan and one
``vm_samples`` row per VM in it. Memory figures are MiB; rarely-set details
(pinning, GPUs, NUMA tuning) live in one compact JSON column so a
5,000-VM snapshot stays small.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of every llmvirt table."""


class HostRow(Base):
    """A registered libvirt host."""

    __tablename__ = "hosts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    uri: Mapped[str] = mapped_column(Text)
    maintenance: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(String(16), default="cli")
    added_at: Mapped[datetime] = mapped_column(DateTime)


class ScanRow(Base):
    """One run of ``llmvirt scan``."""

    __tablename__ = "scans"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    seconds: Mapped[float] = mapped_column(Float)
    ok_hosts: Mapped[int] = mapped_column(Integer)
    failed_hosts: Mapped[int] = mapped_column(Integer)


class HostSnapshotRow(Base):
    """A host's state at one scan, or the reason it could not be read."""

    __tablename__ = "host_snapshots"
    __table_args__ = (Index("ix_host_snapshots_host_taken", "host_id", "taken_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"))
    taken_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    ok: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cpus: Mapped[int] = mapped_column(Integer, default=0)
    cpu_mhz: Mapped[int] = mapped_column(Integer, default=0)
    memory_mib: Mapped[int] = mapped_column(Integer, default=0)
    free_memory_mib: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cpu_model: Mapped[str] = mapped_column(Text, default="")
    hostname: Mapped[str] = mapped_column(Text, default="")
    libvirt_version: Mapped[str] = mapped_column(String(32), default="")
    hypervisor: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # numa, gpus, notes


class VmSampleRow(Base):
    """One VM as seen in one host snapshot."""

    __tablename__ = "vm_samples"
    __table_args__ = (Index("ix_vm_samples_uuid_snapshot", "uuid", "snapshot_id"),)  # one VM's history (0004)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    snapshot_id: Mapped[int] = mapped_column(ForeignKey("host_snapshots.id", ondelete="CASCADE"),
                                             index=True)
    uuid: Mapped[str] = mapped_column(String(36))
    name: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    vcpus: Mapped[int] = mapped_column(Integer)
    max_vcpus: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    current_memory_mib: Mapped[int] = mapped_column(Integer)
    balloon_current_mib: Mapped[int | None] = mapped_column(Integer, nullable=True)
    balloon_maximum_mib: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rss_mib: Mapped[int | None] = mapped_column(Integer, nullable=True)
    unused_mib: Mapped[int | None] = mapped_column(Integer, nullable=True)
    available_mib: Mapped[int | None] = mapped_column(Integer, nullable=True)
    usable_mib: Mapped[int | None] = mapped_column(Integer, nullable=True)
    swap_in_mib: Mapped[int | None] = mapped_column(Integer, nullable=True)
    swap_out_mib: Mapped[int | None] = mapped_column(Integer, nullable=True)
    major_faults: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    cpu_time_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    detail: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # pinning, gpus, numatune


class PlanRow(Base):
    """A rebalancing plan that was applied (or is being applied)."""

    __tablename__ = "plans"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    goal: Mapped[str] = mapped_column(String(32))
    policy: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # applying, done, partial, failed
    body: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # the plan as printed


class ActionRow(Base):
    """One action of a plan, with its current status."""

    __tablename__ = "actions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # migrate, pin, balloon
    vm: Mapped[str] = mapped_column(Text)
    vm_uuid: Mapped[str | None] = mapped_column(String(36), nullable=True)
    src: Mapped[str | None] = mapped_column(Text, nullable=True)
    dst: Mapped[str | None] = mapped_column(Text, nullable=True)
    params: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending, running, done, skipped, failed
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # measured by the action: seconds, downtime


class ActionEventRow(Base):
    """A state change of an action, with its time and detail."""

    __tablename__ = "action_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    action_id: Mapped[int] = mapped_column(ForeignKey("actions.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)


class OutcomeRow(Base):
    """The scored outcome of one executed action, once the scans after it have been seen."""

    __tablename__ = "outcomes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    action_id: Mapped[int] = mapped_column(ForeignKey("actions.id", ondelete="CASCADE"), unique=True)
    scored_at: Mapped[datetime] = mapped_column(DateTime)
    window_s: Mapped[float] = mapped_column(Float)
    success: Mapped[bool] = mapped_column(Boolean)
    reward: Mapped[float] = mapped_column(Float)
    goal: Mapped[str] = mapped_column(String(16))
    detail: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # before/after loads, score, job stats


class PolicyVersionRow(Base):
    """A policy version: where its checkpoint lives, where it came from, and whether it is active."""

    __tablename__ = "policy_versions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(Text)
    parent: Mapped[str | None] = mapped_column(String(64), nullable=True)
    source: Mapped[str] = mapped_column(String(32))  # shipped, fine-tuned, trained, imported
    created_at: Mapped[datetime] = mapped_column(DateTime)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    activated_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    metrics: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class ControllerRow(Base):
    """A running ``llmvirt controller``: its role at its last tick (leader, follower, lost, error)."""

    __tablename__ = "controllers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)  # hostname:pid
    role: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(DateTime)
    last_tick_at: Mapped[datetime] = mapped_column(DateTime)
    interval_s: Mapped[float] = mapped_column(Float)
    leading_since: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
