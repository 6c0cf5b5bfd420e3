"""Writing a scan into the store: one transaction, a few batched statements (COPY for the VM samples on
PostgreSQL), so a 100,000-VM scan is stored in seconds and a failing write leaves nothing half-recorded.

Plain SQL (:mod:`llmvirt.store.plain`): ``scan`` writes through the stdlib driver without importing
SQLAlchemy. The column lists are the schema's (a test holds them equal to :mod:`llmvirt.store.schema`).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from llmvirt.errors import StoreError
from llmvirt.model.cluster import Host, ScanResult, Vm
from llmvirt.store.plain import Conn, begin


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


_SAMPLE_COLUMNS = ("snapshot_id", "uuid", "name", "state", "vcpus", "max_vcpus", "memory_mib", "current_memory_mib",
                   "balloon_current_mib", "balloon_maximum_mib", "rss_mib", "unused_mib", "available_mib",
                   "usable_mib", "swap_in_mib", "swap_out_mib", "major_faults", "cpu_time_ns", "detail")
_HOST_COLUMNS = ("scan_id", "host_id", "taken_at", "ok", "error", "cpus", "cpu_mhz", "memory_mib", "free_memory_mib",
                 "cpu_model", "hostname", "libvirt_version", "hypervisor", "detail")


_INSERT_SAMPLE = (f"INSERT INTO vm_samples ({', '.join(_SAMPLE_COLUMNS)}) "  # noqa: S608 - constant column names
                  f"VALUES ({', '.join(':' + c for c in _SAMPLE_COLUMNS)})")
_INSERT_SNAPSHOT = (f"INSERT INTO host_snapshots ({', '.join(_HOST_COLUMNS)}) "  # noqa: S608 - constant column names
                    f"VALUES ({', '.join(':' + c for c in _HOST_COLUMNS)})")


def _insert_samples(c: Conn, rows: list[dict[str, Any]]) -> None:
    """Every VM sample of a scan in one go: PostgreSQL's COPY (several times faster than batched INSERTs for a
    fleet's 100,000 rows), else one executemany."""
    if c.dialect != "postgresql":
        c.run_many(_INSERT_SAMPLE, rows, typed=("detail",))
        return
    import json

    from psycopg import sql

    cols = sql.SQL(", ").join(sql.Identifier(c) for c in _SAMPLE_COLUMNS)
    stmt = sql.SQL("COPY vm_samples ({}) FROM STDIN").format(cols)
    with c.driver().cursor() as cur, cur.copy(stmt) as copy:
        for r in rows:
            copy.write_row([json.dumps(r["detail"]) if c == "detail" and r["detail"] is not None else r[c]
                            for c in _SAMPLE_COLUMNS])


def _host_row(scan_id: int, host_id: int, when: datetime, h: Host) -> dict[str, Any]:
    return dict(scan_id=scan_id, host_id=host_id, taken_at=when, ok=True, error=None, cpus=h.cpus,
                cpu_mhz=h.cpu_mhz, memory_mib=h.memory_mib, free_memory_mib=h.free_memory_mib, cpu_model=h.cpu_model,
                hostname=h.hostname, libvirt_version=h.libvirt_version, hypervisor=h.hypervisor,
                detail=_host_detail(h))


def _failed_row(scan_id: int, host_id: int, when: datetime, reason: str) -> dict[str, Any]:
    return dict(scan_id=scan_id, host_id=host_id, taken_at=when, ok=False, error=reason, cpus=0, cpu_mhz=0,
                memory_mib=0, free_memory_mib=None, cpu_model="", hostname="", libvirt_version="", hypervisor="",
                detail=None)


def record_scan(store: Any, result: ScanResult, taken_at: datetime | None = None) -> int:
    """Store one scan (every host snapshot and VM sample) atomically; returns the scan id. ``store``: an engine
    or a :mod:`llmvirt.store.plain` store (``scan`` writes through the stdlib driver, without SQLAlchemy)."""
    when = taken_at or _now()
    try:
        with begin(store) as c:
            host_ids = {r.name: r.id for r in c.rows("SELECT name, id FROM hosts")}
            scan_id = c.rows("INSERT INTO scans (started_at, seconds, ok_hosts, failed_hosts) "
                             "VALUES (:t, :s, :ok, :failed) RETURNING id",
                             {"t": when, "s": result.seconds, "ok": len(result.hosts),
                              "failed": len(result.failures)})[0].id
            kept = [h for h in result.hosts if h.name in host_ids]  # hosts removed while the scan ran are left out
            rows = [_host_row(scan_id, host_ids[h.name], when, h) for h in kept]
            rows += [_failed_row(scan_id, host_ids[n], when, r) for n, r in result.failures.items() if n in host_ids]
            c.run_many(_INSERT_SNAPSHOT, rows, typed=("taken_at", "detail"))  # one batch per table, not one per host
            snap_ids = {r.host_id: r.id for r in c.rows(
                "SELECT host_id, id FROM host_snapshots WHERE scan_id = :scan AND ok = :yes",
                {"scan": scan_id, "yes": True})}
            vm_rows = [_vm_row(snap_ids[host_ids[h.name]], v) for h in kept for v in h.vms]
            if vm_rows:
                _insert_samples(c, vm_rows)
            return int(scan_id)
    except StoreError as exc:  # a locked, unwritable or broken store
        raise StoreError(f"cannot record the scan: {exc}") from None


