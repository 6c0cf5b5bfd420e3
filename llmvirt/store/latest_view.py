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

from llmvirt.model.cluster import Balloon, Cluster, Gpu, GpuAttachment, Host, MdevType, NumaCell, NvmlGpu, Vm
from llmvirt.model.usage import cpu_fraction
from llmvirt.store.plain import Conn, as_json, as_time, begin, expand

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
    d = as_json(r.detail) or {}
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


def _chunks(ids: Iterable[int]) -> Iterator[list[int]]:
    ids = sorted(set(ids))
    for i in range(0, len(ids), _CHUNK):
        yield ids[i:i + _CHUNK]


# The good snapshots of the recent scans (or of every scan), ranked newest first per host; of the hosts in
# :hosts* unless :all_hosts. Written out in each statement that reads it: every statement here is a constant.
_TWO_LATEST = """SELECT * FROM (SELECT s.*, row_number() OVER (PARTITION BY host_id ORDER BY id DESC) AS rn
    FROM host_snapshots s WHERE ok = :yes AND scan_id >= :lo AND (:all_hosts OR host_id IN (:hosts*))) r
    WHERE rn <= 2"""
_NEWEST_SAMPLES = """SELECT * FROM vm_samples WHERE snapshot_id IN (SELECT id FROM (
    SELECT s.id, row_number() OVER (PARTITION BY host_id ORDER BY id DESC) AS rn
    FROM host_snapshots s WHERE ok = :yes AND scan_id >= :lo AND (:all_hosts OR host_id IN (:hosts*))) r
    WHERE rn = 1) ORDER BY id"""
_SAMPLES = "SELECT * FROM vm_samples WHERE snapshot_id IN (:ids*) ORDER BY id"
_LAST_ATTEMPTS = """SELECT host_id, id FROM host_snapshots
    WHERE id IN (SELECT max(id) FROM host_snapshots WHERE scan_id >= :lo GROUP BY host_id)"""
_OWN_LAST_ATTEMPTS = "SELECT host_id, max(id) AS id FROM host_snapshots WHERE host_id IN (:hosts*) GROUP BY host_id"
_ERRORS = "SELECT host_id, error FROM host_snapshots WHERE id IN (:ids*) AND ok = :no"
_COUNTERS = """SELECT h.scan_id, v.uuid, v.cpu_time_ns FROM vm_samples v JOIN host_snapshots h ON h.id = v.snapshot_id
    WHERE h.scan_id IN (:ids*) ORDER BY v.id"""
_HOSTS = "SELECT id, name, uri, maintenance, source FROM hosts WHERE :all_hosts OR name IN (:names*) ORDER BY id"


def _window_start(c: Conn) -> int:
    """The first scan id of the last :data:`WINDOW` scans, or 0 when the store holds no more than that."""
    ids = [r.id for r in c.rows("SELECT id FROM scans ORDER BY id DESC LIMIT :n", {"n": WINDOW})]
    return min(ids) if len(ids) == WINDOW else 0


def _ranked(sql: str, lo: int, host_ids: list[int] | None) -> tuple[str, dict[str, Any]]:
    """A statement over the ranked snapshots, with its parameters."""
    sql, params = expand(sql, hosts=host_ids or [])
    return sql, params | {"yes": True, "lo": lo, "all_hosts": host_ids is None}


def _two_latest_ok(c: Conn, host_ids: list[int], lo: int, only: list[int] | None
                   ) -> tuple[dict[int, list[Any]], set[int]]:
    """Per host, its latest two good snapshots (plain rows), newest first: one windowed query over the recent
    scans (of the hosts ``only``, else all), then one over the whole history of the hosts those scans do not
    cover. Also the ids the window ranked newest (their samples are read through the ranked subquery)."""
    out: dict[int, list[Any]] = {}
    window_newest: set[int] = set()
    for snap in c.rows(*_ranked(_TWO_LATEST, lo, only)):
        out.setdefault(snap.host_id, []).append(snap)
        if snap.rn == 1:
            window_newest.add(int(snap.id))
    if lo:  # hosts the window does not cover (new, failing, or not scanned lately): their whole history, set-wise
        for chunk in _chunks(h for h in host_ids if len(out.get(h, [])) < 2):
            for h in chunk:
                out.pop(h, None)
            for snap in c.rows(*_ranked(_TWO_LATEST, 0, chunk)):
                out.setdefault(snap.host_id, []).append(snap)
    for rows in out.values():
        rows.sort(key=lambda r: r.id, reverse=True)
    return out, window_newest


def _last_errors(c: Conn, host_ids: list[int], lo: int) -> dict[int, str | None]:
    """Per host, the error of its latest scan attempt when that attempt failed."""
    latest_ids = {int(r.host_id): int(r.id) for r in c.rows(_LAST_ATTEMPTS, {"lo": lo})}
    if lo:  # hosts no recent scan attempted: their own latest attempt
        for chunk in _chunks(set(host_ids) - set(latest_ids)):
            latest_ids.update({int(r.host_id): int(r.id) for r in c.rows(*expand(_OWN_LAST_ATTEMPTS, hosts=chunk))})
    out: dict[int, str | None] = {}
    for chunk in _chunks(latest_ids.values()):
        sql, params = expand(_ERRORS, ids=chunk)
        out.update({int(r.host_id): r.error for r in c.rows(sql, params | {"no": False})})
    return out


def _samples(c: Conn, lo: int, only: list[int] | None, others: list[int]) -> dict[int, list[Any]]:
    """Per snapshot, its VM samples as plain rows (a fleet's scan is 100,000 of them): the newest ranked snapshot
    of every host through a subquery (no parameter list), plus ``others`` by id."""
    out: dict[int, list[Any]] = {}
    queries = [_ranked(_NEWEST_SAMPLES, lo, only)] + [expand(_SAMPLES, ids=chunk) for chunk in _chunks(others)]
    for sql, params in queries:
        for r in c.rows(sql, params):
            out.setdefault(r.snapshot_id, []).append(r)
    return out


def _previous_counters(c: Conn, scan_ids: list[int]) -> dict[int, dict[str, int | None]]:
    """Per scan, every VM's CPU-time counter in it (on whichever host it was)."""
    out: dict[int, dict[str, int | None]] = {}
    for chunk in _chunks(scan_ids):
        for r in c.rows(*expand(_COUNTERS, ids=chunk)):
            out.setdefault(int(r.scan_id), {})[r.uuid] = r.cpu_time_ns
    return out


def _fill(view: HostView, snap: Any, rows: list[Any]) -> None:
    host, detail = view.host, as_json(snap.detail) or {}
    host.cpus, host.cpu_mhz, host.memory_mib = snap.cpus, snap.cpu_mhz, snap.memory_mib
    host.free_memory_mib, host.cpu_model, host.hostname = snap.free_memory_mib, snap.cpu_model, snap.hostname
    host.libvirt_version, host.hypervisor = snap.libvirt_version, snap.hypervisor
    host.numa_cells = [NumaCell(i, tuple(c), m) for i, c, m in detail.get("numa", [])]
    host.gpus = [_gpu_from(g) for g in detail.get("gpus", [])]
    host.notes = list(detail.get("notes", []))
    host.vms = [_vm_from(r) for r in rows]
    view.scanned_at = as_time(snap.taken_at)


def _apply_utilisation(vms: list[Vm], prev: dict[str, int | None], seconds: float) -> None:
    for v in vms:
        before = prev.get(v.uuid)
        if before is None or v.cpu_time_ns is None or seconds <= 0 or not v.running:
            continue
        frac = cpu_fraction(before, v.cpu_time_ns, seconds, v.vcpus)
        if frac is not None:
            v.cpu_util = round(frac, 4)


def latest(store: Any, names: list[str] | None = None) -> list[HostView]:
    """The latest view of every registered host (or of ``names``), in registration order. ``store``: an
    engine or a :mod:`llmvirt.store.plain` store."""
    sql, params = expand(_HOSTS, names=names or [])
    with begin(store) as c:
        rows = c.rows(sql, params | {"all_hosts": not names})
        lo = _window_start(c)
        only = [r.id for r in rows] if names else None
        snaps, newest = _two_latest_ok(c, [r.id for r in rows], lo, only)
        errors = _last_errors(c, [r.id for r in rows], lo)
        samples = _samples(c, lo, only, [v[0].id for v in snaps.values() if v[0].id not in newest])
        prev = _previous_counters(c, [v[1].scan_id for v in snaps.values() if len(v) == 2])
    return [_view(r, snaps.get(r.id, []), samples, errors, prev) for r in rows]


def _view(r: Any, two: list[Any], samples: dict[int, list[Any]], errors: dict[int, str | None],
          prev: dict[int, dict[str, int | None]]) -> HostView:
    view = HostView(Host(name=r.name, uri=r.uri, maintenance=bool(r.maintenance)), r.source, None,
                    errors.get(r.id), None)
    if two:
        _fill(view, two[0], samples.get(two[0].id, []))
    if len(two) == 2:
        view.previous_at = as_time(two[1].taken_at)
        _apply_utilisation(view.host.vms, prev.get(two[1].scan_id, {}),
                           (as_time(two[0].taken_at) - view.previous_at).total_seconds())
    return view


def latest_cluster(store: Any, names: list[str] | None = None) -> Cluster:
    """The Cluster as of the latest snapshots: what placement and rebalancing plan on."""
    return Cluster(hosts=[v.host for v in latest(store, names)])
