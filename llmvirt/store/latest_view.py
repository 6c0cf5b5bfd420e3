"""The latest view of every host: what ``status``, ``place`` and every plan start from.

Read set-wise over the last few scans, in a fixed number of queries whatever the fleet's size (the
latest attempt per host, the latest two good snapshots per host, their VM samples, and the previous
scans' CPU counters), so 10,000 hosts cost a few queries, not five per host; the hosts those scans do
not cover (new, failing, or not scanned lately) are read over their whole history, also set-wise.

A VM's CPU use is the delta of its CPU-time counter between a host's latest good snapshot and the
whole scan before it: a VM that arrived by migration has its previous sample on its old host.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from llmvirt.model.cluster import Balloon, Cluster, Gpu, GpuAttachment, Host, MdevType, NumaCell, NvmlGpu, Vm
from llmvirt.model.usage import cpu_fraction
from llmvirt.store.schema import HostRow, HostSnapshotRow, ScanRow, VmSampleRow

_CHUNK = 5000  #: ids per IN list (SQLite allows 32,766 variables; PostgreSQL 65,535 parameters)
WINDOW = 4  #: recent scans read set-wise; hosts they do not cover are read one by one


@dataclass
class HostView:
    """A registered host with its latest good snapshot and its latest scan outcome."""

    host: Host  #: the host as last scanned (capacity empty if never scanned)
    source: str  #: ``cli`` or ``config``
    scanned_at: datetime | None  #: time of the latest successful snapshot
    last_error: str | None  #: reason the latest scan attempt failed, if it did
    previous_at: datetime | None  #: time of the snapshot before, used for utilisation


def _gpu_from(d: dict[str, Any]) -> Gpu:
    d = dict(d)
    d["mdev_types"] = tuple(MdevType(**m) for m in d.get("mdev_types", ()))
    d["mdevs"] = tuple(tuple(m) for m in d.get("mdevs", ()))
    d["nvml"] = NvmlGpu(**d["nvml"]) if d.get("nvml") else None
    return Gpu(**d)


def _pins(d: dict[str, list[int]] | None) -> dict[int, tuple[int, ...]]:
    return {int(k): tuple(v) for k, v in (d or {}).items()}


def _vm_from(r: Any) -> Vm:
    d = r.detail or {}
    return Vm(
        name=r.name, uuid=r.uuid, state=r.state, vcpus=r.vcpus, max_vcpus=r.max_vcpus,
        memory_mib=r.memory_mib, current_memory_mib=r.current_memory_mib,
        balloon=Balloon(r.balloon_current_mib, r.balloon_maximum_mib, r.rss_mib, r.unused_mib,
                        r.available_mib, r.usable_mib, r.swap_in_mib, r.swap_out_mib, r.major_faults),
        pinning=_pins(d.get("pin")), persistent_pinning=_pins(d.get("ppin")),
        emulator_pinning=tuple(d["emu"]) if "emu" in d else None, numa_tune=d.get("numa"),
        cpu_time_ns=r.cpu_time_ns, gpus=[GpuAttachment(**g) for g in d.get("gpus", [])],
        pci_hostdevs=tuple(d.get("pci", ())), persistent=not d.get("transient", False),
    )


def latest_ok_ids(conn: Session, host_id: int, n: int) -> list[tuple[int, datetime]]:
    """One host's latest ``n`` good snapshots as (id, time), newest first."""
    q = (select(HostSnapshotRow.id, HostSnapshotRow.taken_at)
         .where(HostSnapshotRow.host_id == host_id, HostSnapshotRow.ok.is_(True))
         .order_by(HostSnapshotRow.id.desc()).limit(n))
    return [(int(i), t) for i, t in conn.execute(q).all()]


def _chunks(ids: Iterable[int]) -> Iterator[list[int]]:
    ids = sorted(set(ids))
    for i in range(0, len(ids), _CHUNK):
        yield ids[i:i + _CHUNK]


def _window_start(s: Session) -> int:
    """The first scan id of the last :data:`WINDOW` scans, or 0 when the store holds no more than that."""
    ids = s.execute(select(ScanRow.id).order_by(ScanRow.id.desc()).limit(WINDOW)).scalars().all()
    return min(ids) if len(ids) == WINDOW else 0


def _ranked(lo: int, host_ids: list[int] | None) -> Any:
    """The good snapshots of the recent scans, ranked newest first per host (a subquery, every column)."""
    snaps = HostSnapshotRow.__table__
    rank = func.row_number().over(partition_by=snaps.c.host_id, order_by=snaps.c.id.desc())
    q = select(snaps, rank.label("rn")).where(snaps.c.ok.is_(True), snaps.c.scan_id >= lo)
    if host_ids is not None:
        q = q.where(snaps.c.host_id.in_(host_ids))
    return q.subquery()


def _two_latest_ok(s: Session, host_ids: list[int], lo: int, ranked: Any) -> tuple[dict[int, list[Any]], set[int]]:
    """Per host, its latest two good snapshots (plain rows), newest first: one windowed query over the recent
    scans, then one over the whole history of the hosts those scans do not cover. Also the ids the window
    ranked newest (their samples are read through the ranked subquery)."""
    out: dict[int, list[Any]] = {}
    window_newest: set[int] = set()
    for snap in s.execute(select(ranked).where(ranked.c.rn <= 2)):
        out.setdefault(snap.host_id, []).append(snap)
        if snap.rn == 1:
            window_newest.add(int(snap.id))
    if lo:  # hosts the window does not cover (new, failing, or not scanned lately): their whole history, set-wise
        for chunk in _chunks(h for h in host_ids if len(out.get(h, [])) < 2):
            for h in chunk:
                out.pop(h, None)
            older = _ranked(0, chunk)
            for snap in s.execute(select(older).where(older.c.rn <= 2)):
                out.setdefault(snap.host_id, []).append(snap)
    for rows in out.values():
        rows.sort(key=lambda r: r.id, reverse=True)
    return out, window_newest


def _last_errors(s: Session, host_ids: list[int], lo: int) -> dict[int, str | None]:
    """Per host, the error of its latest scan attempt when that attempt failed."""
    last = (select(func.max(HostSnapshotRow.id)).where(HostSnapshotRow.scan_id >= lo)
            .group_by(HostSnapshotRow.host_id))
    latest_ids = {int(h): int(i) for h, i in s.execute(
        select(HostSnapshotRow.host_id, HostSnapshotRow.id).where(HostSnapshotRow.id.in_(last))).all()}
    if lo:  # hosts no recent scan attempted: their own latest attempt
        for chunk in _chunks(set(host_ids) - set(latest_ids)):
            q = (select(HostSnapshotRow.host_id, func.max(HostSnapshotRow.id))
                 .where(HostSnapshotRow.host_id.in_(chunk)).group_by(HostSnapshotRow.host_id))
            latest_ids.update({int(h): int(i) for h, i in s.execute(q).all()})
    out: dict[int, str | None] = {}
    for chunk in _chunks(latest_ids.values()):
        q = select(HostSnapshotRow.host_id, HostSnapshotRow.error).where(HostSnapshotRow.id.in_(chunk),
                                                                          HostSnapshotRow.ok.is_(False))
        out.update({int(h): e for h, e in s.execute(q).all()})
    return out


def _samples(s: Session, ranked: Any, others: list[int]) -> dict[int, list[Any]]:
    """Per snapshot, its VM samples as plain rows (not ORM objects: a fleet's scan is 100,000 of them): the
    newest ranked snapshot of every host through a subquery (no parameter list), plus ``others`` by id."""
    out: dict[int, list[Any]] = {}
    table = VmSampleRow.__table__
    newest = select(ranked.c.id).where(ranked.c.rn == 1)
    wheres = [table.c.snapshot_id.in_(newest)] + [table.c.snapshot_id.in_(c) for c in _chunks(others)]
    for where in wheres:
        for r in s.execute(select(table).where(where).order_by(table.c.id)):
            out.setdefault(r.snapshot_id, []).append(r)
    return out


def _previous_counters(s: Session, scan_ids: list[int]) -> dict[int, dict[str, int | None]]:
    """Per scan, every VM's CPU-time counter in it (on whichever host it was)."""
    out: dict[int, dict[str, int | None]] = {}
    for chunk in _chunks(scan_ids):
        q = (select(HostSnapshotRow.scan_id, VmSampleRow.uuid, VmSampleRow.cpu_time_ns)
             .join(HostSnapshotRow, HostSnapshotRow.id == VmSampleRow.snapshot_id)
             .where(HostSnapshotRow.scan_id.in_(chunk)).order_by(VmSampleRow.id))
        for scan, uuid, cpu in s.execute(q).all():
            out.setdefault(int(scan), {})[uuid] = cpu
    return out


def _fill(view: HostView, snap: Any, rows: list[Any]) -> None:
    host, detail = view.host, snap.detail or {}
    host.cpus, host.cpu_mhz, host.memory_mib = snap.cpus, snap.cpu_mhz, snap.memory_mib
    host.free_memory_mib, host.cpu_model, host.hostname = snap.free_memory_mib, snap.cpu_model, snap.hostname
    host.libvirt_version, host.hypervisor = snap.libvirt_version, snap.hypervisor
    host.numa_cells = [NumaCell(i, tuple(c), m) for i, c, m in detail.get("numa", [])]
    host.gpus = [_gpu_from(g) for g in detail.get("gpus", [])]
    host.notes = list(detail.get("notes", []))
    host.vms = [_vm_from(r) for r in rows]
    view.scanned_at = snap.taken_at


def _apply_utilisation(vms: list[Vm], prev: dict[str, int | None], seconds: float) -> None:
    for v in vms:
        before = prev.get(v.uuid)
        if before is None or v.cpu_time_ns is None or seconds <= 0 or not v.running:
            continue
        frac = cpu_fraction(before, v.cpu_time_ns, seconds, v.vcpus)
        if frac is not None:
            v.cpu_util = round(frac, 4)


def latest(engine: Engine, names: list[str] | None = None) -> list[HostView]:
    """The latest view of every registered host (or of ``names``), in registration order."""
    q = select(HostRow).order_by(HostRow.id)
    if names:
        q = q.where(HostRow.name.in_(names))
    with Session(engine) as s:
        rows = s.scalars(q).all()
        lo = _window_start(s)
        ranked = _ranked(lo, [r.id for r in rows] if names else None)
        snaps, newest = _two_latest_ok(s, [r.id for r in rows], lo, ranked)
        errors = _last_errors(s, [r.id for r in rows], lo)
        samples = _samples(s, ranked, [v[0].id for v in snaps.values() if v[0].id not in newest])
        prev = _previous_counters(s, [v[1].scan_id for v in snaps.values() if len(v) == 2])
        views = []
        for r in rows:
            view = HostView(Host(name=r.name, uri=r.uri, maintenance=r.maintenance), r.source, None,
                            errors.get(r.id), None)
            two = snaps.get(r.id, [])
            if two:
                _fill(view, two[0], samples.get(two[0].id, []))
            if len(two) == 2:
                view.previous_at = two[1].taken_at
                _apply_utilisation(view.host.vms, prev.get(two[1].scan_id, {}),
                                   (two[0].taken_at - two[1].taken_at).total_seconds())
            views.append(view)
        return views


def latest_cluster(engine: Engine, names: list[str] | None = None) -> Cluster:
    """The Cluster as of the latest snapshots: what placement and rebalancing plan on."""
    return Cluster(hosts=[v.host for v in latest(engine, names)])
