"""Scans in the store: history read back out, and pruning. Writing a scan: :mod:`scan_writer`; the latest
Cluster: :mod:`latest_view` (both re-exported here)."""

from __future__ import annotations

import bisect
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session

from llmvirt.model.pressure import pressure_flag
from llmvirt.model.usage import cpu_fraction, cpu_ns_used
from llmvirt.store.latest_view import HostView, latest, latest_cluster  # noqa: F401 - re-exported
from llmvirt.store.scan_writer import _now, record_scan  # noqa: F401 - re-exported
from llmvirt.store.schema import HostRow, HostSnapshotRow, ScanRow, VmSampleRow

STEP_S = 300.0  #: histories are read one scan per 5 minutes: the step of the traces every policy learned on


def latest_ok_ids(conn: Session, host_id: int, n: int) -> list[tuple[int, datetime]]:
    """One host's latest ``n`` good snapshots as (id, time), newest first."""
    q = (select(HostSnapshotRow.id, HostSnapshotRow.taken_at)
         .where(HostSnapshotRow.host_id == host_id, HostSnapshotRow.ok.is_(True))
         .order_by(HostSnapshotRow.id.desc()).limit(n))
    return [(int(i), t) for i, t in conn.execute(q).all()]


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
    """Per VM uuid, its CPU use (fraction of its vCPUs) between consecutive samples of ``scans`` scans 5 minutes
    apart (:func:`step_scan_ids`, a missing one left out), oldest first; what CloudSim's adaptive overload
    detectors, the learned forecast and ``place``'s peak read on real hosts."""
    out: dict[str, list[float]] = {}
    with Session(engine) as s:
        ids = step_scan_ids(s, scans, end_at_gap=False)
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


def step_scan_ids(s: Session, scans: int, end_at_gap: bool = True) -> list[int]:
    """The ids of the scans nearest the latest scan's time, STEP_S before it, twice that, ... (``scans`` times),
    oldest first: each within half a step of its time and each a different scan. Scanned every 5 minutes, the last
    ``scans`` scans; scanned more often, one scan per step, so each sample is a mean over a step, as in the traces
    every policy was trained and tuned on. A time with no scan (a store younger than the window, a missed cron
    run) ends the window when ``end_at_gap`` (the scan recovery's hour, whose inputs are positions), else is left
    out (histories pooled or fitted: the detectors', the forecast's, ``place``'s peak)."""
    newest = s.execute(select(ScanRow.started_at).order_by(ScanRow.id.desc()).limit(1)).scalar()
    if newest is None:
        return []
    since = newest - timedelta(seconds=STEP_S * (scans - 0.5))
    rows = s.execute(select(ScanRow.id, ScanRow.started_at).where(ScanRow.started_at >= since)
                     .order_by(ScanRow.started_at.desc())).all()
    ago = [(newest - t).total_seconds() for _, t in rows]  # ascending: the newest first
    picked: list[int] = []
    for k in range(scans):
        j = bisect.bisect_left(ago, k * STEP_S)
        off, sid = min((abs(ago[c] - k * STEP_S), int(rows[c][0])) for c in (j - 1, j) if 0 <= c < len(ago))
        if off <= STEP_S / 2 and sid not in picked:
            picked.append(sid)
        elif end_at_gap:
            break
    return picked[::-1]


def vm_scan_history(engine: Engine, scans: int) -> dict[str, list[tuple[float, float]]]:
    """Per VM uuid, over the hour's scans (:func:`step_scan_ids`), oldest first, one pair per sample after its first:
    its CPU use in CPUs since the sample before, and its host's CPU use then as a share of the host's CPUs (the
    VMs sampled in that snapshot, summed). What the scans showed of a VM and of the host it ran on: the learned
    scan recovery's hour."""
    per_vm: dict[str, list[tuple[int, float]]] = {}
    host_used: dict[int, float] = {}
    host_cpus: dict[int, int] = {}
    with Session(engine) as s:
        ids = step_scan_ids(s, scans)
        q = (select(HostSnapshotRow.id, HostSnapshotRow.cpus, HostSnapshotRow.taken_at, VmSampleRow.uuid,
                    VmSampleRow.cpu_time_ns, VmSampleRow.vcpus)
             .join(HostSnapshotRow, HostSnapshotRow.id == VmSampleRow.snapshot_id)
             .where(HostSnapshotRow.scan_id.in_(ids), VmSampleRow.state == "running")
             .order_by(HostSnapshotRow.taken_at, VmSampleRow.id))
        last: dict[str, tuple[datetime, int | None]] = {}
        for snap, cpus, when, uuid, cpu, vcpus in s.execute(q).all():
            if uuid in last:
                frac = cpu_fraction(last[uuid][1], cpu, (when - last[uuid][0]).total_seconds(), vcpus)
                if frac is not None:
                    used = min(1.0, frac) * max(int(vcpus or 1), 1)
                    per_vm.setdefault(uuid, []).append((int(snap), used))
                    host_used[int(snap)] = host_used.get(int(snap), 0.0) + used
                    host_cpus[int(snap)] = max(int(cpus or 1), 1)
            last[uuid] = (when, cpu)
    return {u: [(used, host_used[snap] / host_cpus[snap]) for snap, used in rows] for u, rows in per_vm.items()}


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
