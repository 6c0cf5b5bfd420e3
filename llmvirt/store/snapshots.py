"""Writing scans into the store, and reading history back out (the latest Cluster: :mod:`latest_view`).

A scan is written in one transaction with a few batched statements (COPY for the VM samples on
PostgreSQL), so a 100,000-VM scan is stored in seconds and a failing write leaves nothing
half-recorded.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from llmvirt.errors import StoreError
from llmvirt.model.cluster import (
    Host,
    ScanResult,
    Vm,
)
from llmvirt.model.pressure import pressure_flag
from llmvirt.model.usage import cpu_fraction, cpu_ns_used
from llmvirt.store.latest_view import HostView, latest, latest_cluster, latest_ok_ids  # noqa: F401 - re-exported
from llmvirt.store.schema import HostRow, HostSnapshotRow, ScanRow, VmSampleRow


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _host_detail(h: Host) -> dict[str, Any]:
    return {
        "numa": [[c.id, list(c.cpus), c.memory_mib] for c in h.numa_cells],
        "gpus": [asdict(g) for g in h.gpus],
        "notes": h.notes,
    }


def _vm_detail(v: Vm) -> dict[str, Any] | None:
    d: dict[str, Any] = {}
    if v.pinning:
        d["pin"] = {str(k): list(c) for k, c in v.pinning.items()}
    if v.persistent_pinning:
        d["ppin"] = {str(k): list(c) for k, c in v.persistent_pinning.items()}
    if v.emulator_pinning is not None:
        d["emu"] = list(v.emulator_pinning)
    if v.numa_tune:
        d["numa"] = v.numa_tune
    if v.gpus:
        d["gpus"] = [{k: x for k, x in asdict(g).items() if x is not None} for g in v.gpus]
    if v.pci_hostdevs:
        d["pci"] = list(v.pci_hostdevs)
    if not v.persistent:
        d["transient"] = True
    return d or None


def _vm_row(snapshot_id: int, v: Vm) -> dict[str, Any]:
    b = v.balloon
    return {
        "snapshot_id": snapshot_id, "uuid": v.uuid, "name": v.name, "state": v.state,
        "vcpus": v.vcpus, "max_vcpus": v.max_vcpus, "memory_mib": v.memory_mib,
        "current_memory_mib": v.current_memory_mib, "balloon_current_mib": b.current_mib,
        "balloon_maximum_mib": b.maximum_mib, "rss_mib": b.rss_mib, "unused_mib": b.unused_mib,
        "available_mib": b.available_mib, "usable_mib": b.usable_mib, "swap_in_mib": b.swap_in_mib,
        "swap_out_mib": b.swap_out_mib, "major_faults": b.major_faults,
        "cpu_time_ns": v.cpu_time_ns, "detail": _vm_detail(v),
    }


_SAMPLE_COLUMNS = [c.name for c in VmSampleRow.__table__.columns if c.name != "id"]


def _insert_samples(conn: Any, rows: list[dict[str, Any]]) -> None:
    """Every VM sample of a scan in one go: PostgreSQL's COPY (several times faster than batched INSERTs for a
    fleet's 100,000 rows), else one executemany."""
    if conn.dialect.name != "postgresql":
        conn.execute(insert(VmSampleRow), rows)
        return
    import json

    from psycopg import sql

    cols = sql.SQL(", ").join(sql.Identifier(c) for c in _SAMPLE_COLUMNS)
    stmt = sql.SQL("COPY vm_samples ({}) FROM STDIN").format(cols)
    with conn.connection.driver_connection.cursor() as cur, cur.copy(stmt) as copy:
        for r in rows:
            copy.write_row([json.dumps(r["detail"]) if c == "detail" and r["detail"] is not None else r[c]
                            for c in _SAMPLE_COLUMNS])


def record_scan(engine: Engine, result: ScanResult, taken_at: datetime | None = None) -> int:
    """Store one scan (every host snapshot and VM sample) atomically; returns the scan id."""
    when = taken_at or _now()
    try:
        with engine.begin() as conn:
            host_ids = dict(conn.execute(select(HostRow.name, HostRow.id)).all())
            scan_id = conn.execute(insert(ScanRow).values(
                started_at=when, seconds=result.seconds, ok_hosts=len(result.hosts),
                failed_hosts=len(result.failures))).inserted_primary_key[0]
            kept = [h for h in result.hosts if h.name in host_ids]  # hosts removed while the scan ran are left out
            if kept:  # one batched insert per table: a fleet's scan is a few statements, not one per host
                snap_ids = conn.execute(insert(HostSnapshotRow).returning(
                    HostSnapshotRow.id, sort_by_parameter_order=True), [dict(
                        scan_id=scan_id, host_id=host_ids[h.name], taken_at=when, ok=True, error=None,
                        cpus=h.cpus, cpu_mhz=h.cpu_mhz, memory_mib=h.memory_mib,
                        free_memory_mib=h.free_memory_mib, cpu_model=h.cpu_model, hostname=h.hostname,
                        libvirt_version=h.libvirt_version, hypervisor=h.hypervisor,
                        detail=_host_detail(h)) for h in kept]).scalars().all()
                vm_rows = [_vm_row(snap_id, v) for snap_id, h in zip(snap_ids, kept, strict=True) for v in h.vms]
                if vm_rows:
                    _insert_samples(conn, vm_rows)
            for name, reason in result.failures.items():
                if name in host_ids:
                    conn.execute(insert(HostSnapshotRow).values(
                        scan_id=scan_id, host_id=host_ids[name], taken_at=when, ok=False,
                        error=reason, cpus=0, cpu_mhz=0, memory_mib=0, cpu_model="", hostname="",
                        libvirt_version="", hypervisor=""))
            return int(scan_id)
    except OperationalError as exc:
        raise StoreError(f"cannot record the scan: {exc.orig}") from None


def prune(engine: Engine, older_than: timedelta) -> int:
    """Delete snapshots older than ``older_than``, keeping each host's latest; returns the count."""
    cutoff = _now() - older_than
    with engine.begin() as conn:
        latest = select(func.max(HostSnapshotRow.id)).group_by(HostSnapshotRow.host_id)
        res = conn.execute(delete(HostSnapshotRow).where(
            HostSnapshotRow.taken_at < cutoff, HostSnapshotRow.id.not_in(latest)))
        conn.execute(delete(ScanRow).where(
            ScanRow.id.not_in(select(HostSnapshotRow.scan_id).distinct())))
        return int(res.rowcount or 0)


def host_load_history(engine: Engine, host: str, scans: int) -> list[float]:
    """Expected CPU use (fraction of the host's CPUs) over the host's last ``scans`` snapshot pairs, newest first."""
    with Session(engine) as s:
        row = s.scalars(select(HostRow).where(HostRow.name == host)).first()
        if row is None:
            return []
        ids = latest_ok_ids(s, row.id, scans + 1)
        out = []
        for (new_id, new_t), (old_id, old_t) in zip(ids, ids[1:], strict=False):
            cpus = s.execute(select(HostSnapshotRow.cpus).where(HostSnapshotRow.id == new_id)).scalar_one()
            out.append(pair_load(s, old_id, new_id, cpus, (new_t - old_t).total_seconds()))
        return out


def pair_load(s: Session, old_id: int, new_id: int, cpus: int, seconds: float,
              here_for: dict[str, float] | None = None) -> float:
    """A host's CPU use (fraction of its CPUs) between two of its snapshots, from the VMs' CPU time.
    A VM that arrived by migration in between counts from its sample on its old host in the same scan;
    its counter restarted with its new QEMU process, so it counts what it used here (:mod:`llmvirt.model.usage`).
    ``here_for`` (VM uuid -> seconds it has been on this host at the later snapshot, when known: an
    outcome knows when its migration started) turns such a VM's partial figure into its rate over the
    whole interval, so the pair reads as the host's load with the VM on it."""
    new = dict(s.execute(select(VmSampleRow.uuid, VmSampleRow.cpu_time_ns)
                         .where(VmSampleRow.snapshot_id == new_id, VmSampleRow.state == "running")).all())
    scan = select(HostSnapshotRow.scan_id).where(HostSnapshotRow.id == old_id).scalar_subquery()
    old = dict(s.execute(select(VmSampleRow.uuid, VmSampleRow.cpu_time_ns)
                         .join(HostSnapshotRow, HostSnapshotRow.id == VmSampleRow.snapshot_id)
                         .where(HostSnapshotRow.scan_id == scan, VmSampleRow.uuid.in_(list(new)))).all())
    busy = 0.0
    for u, n in new.items():
        used = cpu_ns_used(old.get(u), n) or 0
        stay = (here_for or {}).get(u)
        if stay is not None and 0 < stay < seconds and n is not None and old.get(u) is not None and n < old[u]:
            used = used * seconds / stay  # restarted here: its rate since arrival, over the whole interval
        busy += used
    return busy / (seconds * 1e9 * max(1, cpus)) if seconds > 0 else 0.0


def _used_mib(avail: int | None, unused: int | None, balloon: int | None, current: int) -> float:
    """Memory a guest uses: what it reports (available minus unused), else its balloon size."""
    return float(avail - unused) if avail is not None and unused is not None else float(balloon or current)


def vm_usage_history(engine: Engine, scans: int) -> dict[str, list[tuple[float, float, float]]]:
    """Per VM uuid, ``(time s, memory used MiB, CPU seconds used)`` per stored sample over the last ``scans`` scans,
    oldest first. Memory used is balloon size minus guest-reported unused (the balloon size without
    guest stats); the heads read their history from here on real hosts."""
    with Session(engine) as s:
        ids = [int(i) for i in s.execute(select(ScanRow.id).order_by(ScanRow.id.desc()).limit(scans)).scalars()]
        if not ids:
            return {}
        q = (select(HostSnapshotRow.taken_at, VmSampleRow.uuid, VmSampleRow.available_mib, VmSampleRow.unused_mib,
                    VmSampleRow.balloon_current_mib, VmSampleRow.current_memory_mib, VmSampleRow.cpu_time_ns)
             .join(HostSnapshotRow, HostSnapshotRow.id == VmSampleRow.snapshot_id)
             .where(HostSnapshotRow.scan_id.in_(ids), VmSampleRow.state == "running")
             .order_by(HostSnapshotRow.taken_at, VmSampleRow.id))
        out: dict[str, list[tuple[float, float, float]]] = {}
        for when, uuid, avail, unused, cur, mem, cpu in s.execute(q).all():
            used = _used_mib(avail, unused, cur, mem)
            out.setdefault(uuid, []).append((when.timestamp(), used, (cpu or 0) / 1e9))
        return out


def one_vm_usage(engine: Engine, uuid: str, limit: int) -> list[tuple[float, float, float]]:
    """One VM's last ``limit`` running samples as ``(time s, memory used MiB, CPU seconds used)``, oldest first,
    read through the (uuid, snapshot) index: a VM's week costs the same in a small store and a fleet's."""
    with Session(engine) as s:
        q = (select(HostSnapshotRow.taken_at, VmSampleRow.available_mib, VmSampleRow.unused_mib,
                    VmSampleRow.balloon_current_mib, VmSampleRow.current_memory_mib, VmSampleRow.cpu_time_ns)
             .join(HostSnapshotRow, HostSnapshotRow.id == VmSampleRow.snapshot_id)
             .where(VmSampleRow.uuid == uuid, VmSampleRow.state == "running")
             .order_by(VmSampleRow.snapshot_id.desc()).limit(limit))
        rows = s.execute(q).all()
    out = []
    for when, avail, unused, cur, mem, cpu in reversed(rows):
        used = _used_mib(avail, unused, cur, mem)
        out.append((when.timestamp(), used, (cpu or 0) / 1e9))
    return out


def vm_cpu_history(engine: Engine, scans: int) -> dict[str, list[float]]:
    """Per VM uuid, its CPU use (fraction of its vCPUs) between consecutive stored samples over the last
    ``scans`` scans, oldest first; what CloudSim's adaptive overload detectors read on real hosts."""
    out: dict[str, list[float]] = {}
    with Session(engine) as s:
        ids = [int(i) for i in s.execute(select(ScanRow.id).order_by(ScanRow.id.desc()).limit(scans)).scalars()]
        q = (select(HostSnapshotRow.taken_at, VmSampleRow.uuid, VmSampleRow.cpu_time_ns, VmSampleRow.vcpus)
             .join(HostSnapshotRow, HostSnapshotRow.id == VmSampleRow.snapshot_id)
             .where(HostSnapshotRow.scan_id.in_(ids), VmSampleRow.state == "running")
             .order_by(HostSnapshotRow.taken_at, VmSampleRow.id))
        last: dict[str, tuple[datetime, int | None]] = {}
        for when, uuid, cpu, vcpus in s.execute(q).all():
            if uuid in last:
                frac = cpu_fraction(last[uuid][1], cpu, (when - last[uuid][0]).total_seconds(), vcpus)
                if frac is not None:
                    out.setdefault(uuid, []).append(min(1.0, frac))
            last[uuid] = (when, cpu)
    return out


def vm_pressure_history(engine: Engine, scans: int) -> dict[str, list[bool]]:
    """Per VM uuid, one memory-pressure flag per stored sample over the last ``scans`` scans, oldest first
    (:func:`llmvirt.model.pressure.pressure_flag`, each sample with the one before it): what the balloon
    head's pressure feedback reads on real hosts."""
    out: dict[str, list[bool]] = {}
    with Session(engine) as s:
        ids = [int(i) for i in s.execute(select(ScanRow.id).order_by(ScanRow.id.desc()).limit(scans)).scalars()]
        q = (select(VmSampleRow.uuid, VmSampleRow.usable_mib, VmSampleRow.balloon_current_mib,
                    VmSampleRow.swap_in_mib, VmSampleRow.major_faults)
             .join(HostSnapshotRow, HostSnapshotRow.id == VmSampleRow.snapshot_id)
             .where(HostSnapshotRow.scan_id.in_(ids), VmSampleRow.state == "running")
             .order_by(HostSnapshotRow.taken_at, VmSampleRow.id))
        last: dict[str, tuple[int | None, int | None]] = {}
        for uuid, usable, cur, swap_in, faults in s.execute(q).all():
            prev_swap, prev_faults = last.get(uuid, (None, None))
            out.setdefault(uuid, []).append(pressure_flag(usable, cur, swap_in, prev_swap, faults, prev_faults))
            last[uuid] = (swap_in, faults)
    return out
