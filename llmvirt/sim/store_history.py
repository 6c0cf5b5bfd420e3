"""Replay llmvirt's own history: the store's VM samples as a trace in the generic format.

CPU use comes from the CPU-time delta between consecutive snapshots of the same VM (over its
vCPUs; :mod:`llmvirt.model.usage`, so a migrated VM's restarted counter still counts); memory use
is what the guest reports (available - unused) where it reports it, else the balloon size. VMs are
keyed by UUID, so a VM that migrated keeps one history. Rows can be written as the generic CSV
with :func:`write_generic_csv`.
"""

from __future__ import annotations

import csv
import math
import tempfile
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, Engine, Result, Select, func, select

from llmvirt.errors import UsageError
from llmvirt.model.usage import cpu_fraction
from llmvirt.sim.traces import UsageTrace, load_generic
from llmvirt.store.schema import HostRow, HostSnapshotRow, VmSampleRow

Row = tuple[str, float, float, float, int, float]  #: (vm, timestamp, cpu_pct, mem_mib, vcpus, mem_capacity_mib)
STREAM_BATCH = 10_000  #: rows fetched at a time from a long history


def iter_history_rows(engine: Engine, since: datetime | None = None) -> Iterator[Row]:
    """``(vm, timestamp, cpu_pct, mem_mib, vcpus, mem_capacity_mib)`` for every consecutive pair of samples (of the
    scans taken at or after ``since``, when given), one row at a time as the store returns them: a long history
    is never held whole."""
    q = (select(VmSampleRow.uuid, VmSampleRow.name, HostSnapshotRow.taken_at, VmSampleRow.cpu_time_ns,
                VmSampleRow.vcpus, VmSampleRow.memory_mib, VmSampleRow.balloon_current_mib,
                VmSampleRow.available_mib, VmSampleRow.unused_mib, VmSampleRow.state)
         .join(HostSnapshotRow, VmSampleRow.snapshot_id == HostSnapshotRow.id)
         .where(HostSnapshotRow.ok.is_(True), *_after(since))
         .order_by(VmSampleRow.uuid, HostSnapshotRow.taken_at))
    prev: dict[str, tuple[float, int]] = {}
    with engine.connect() as conn:
        for uuid, name, taken, cpu_ns, vcpus, mem_max, balloon, avail, unused, st in _streamed(conn, q):
            ts = taken.timestamp()
            if st != "running" or cpu_ns is None:
                prev.pop(uuid, None)
                continue
            before = prev.get(uuid)
            prev[uuid] = (ts, cpu_ns)
            frac = cpu_fraction(before[1], cpu_ns, ts - before[0], vcpus) if before else None
            if frac is None:
                continue
            pct = min(100.0, 100 * frac)
            if avail is not None and unused is not None:
                mem = float(max(0, avail - unused))
            else:
                mem = float(balloon if balloon is not None else mem_max)
            yield vm_label(name, uuid), ts, pct, mem, int(vcpus), float(mem_max)


def vm_label(name: str, uuid: str) -> str:
    """A VM's name in the history: its name and the start of its UUID (names may repeat across hosts)."""
    return f"{name}-{uuid[:8]}"


def fleet_hosts(engine: Engine) -> list[tuple[str, int, int, int]]:
    """``(host, cpus, cpu_mhz, memory_mib)`` of every registered host, from its latest successful snapshot."""
    q = (select(HostRow.name, HostSnapshotRow.cpus, HostSnapshotRow.cpu_mhz, HostSnapshotRow.memory_mib)
         .join(HostSnapshotRow, HostSnapshotRow.host_id == HostRow.id)
         .where(HostSnapshotRow.ok.is_(True))
         .order_by(HostRow.name, HostSnapshotRow.taken_at))
    latest: dict[str, tuple[str, int, int, int]] = {}
    with engine.connect() as conn:
        for name, cpus, mhz, mem in conn.execute(q):
            latest[name] = (name, int(cpus), int(mhz), int(mem))
    return list(latest.values())


def vm_hosts(engine: Engine, since: datetime | None = None) -> Iterator[tuple[str, float, str]]:
    """``(vm, timestamp, host)`` for every sample of a running VM (at or after ``since``, when given), oldest
    first, one at a time: where each VM ran, scan by scan."""
    q = (select(VmSampleRow.uuid, VmSampleRow.name, HostSnapshotRow.taken_at, HostRow.name)
         .join(HostSnapshotRow, VmSampleRow.snapshot_id == HostSnapshotRow.id)
         .join(HostRow, HostSnapshotRow.host_id == HostRow.id)
         .where(HostSnapshotRow.ok.is_(True), VmSampleRow.state == "running", *_after(since))
         .order_by(HostSnapshotRow.taken_at))
    with engine.connect() as conn:
        for uuid, name, taken, host in _streamed(conn, q):
            yield vm_label(name, uuid), taken.timestamp(), host


def _streamed(conn: Connection, q: Select) -> Result:
    """``q``'s rows fetched in batches as they are read (a server-side cursor on PostgreSQL, whose driver would
    otherwise buffer the whole result), so a long history is never held whole."""
    return conn.execution_options(yield_per=STREAM_BATCH).execute(q)


def _after(since: datetime | None) -> list:
    """The filter that keeps the scans taken at or after ``since`` (none without it)."""
    return [] if since is None else [HostSnapshotRow.taken_at >= since]


def window_start(engine: Engine, days: int, interval_s: int) -> datetime | None:
    """Where the latest ``days`` whole days of scans begin: that many days before the latest scan, plus two scan
    intervals (CPU use needs a pair of samples, and scans jitter); None for an empty store."""
    with engine.connect() as conn:
        latest = conn.execute(select(func.max(HostSnapshotRow.taken_at))).scalar()
    return None if latest is None else latest - timedelta(seconds=days * 86_400 + 2 * interval_s)


def write_generic_csv(rows: Iterable[Row], path: Path) -> tuple[int, float, float]:
    """Write rows in the generic trace format (with the optional size columns), one at a time; the number of
    rows and their earliest and latest timestamps (0 for none)."""
    count, first, last = 0, math.inf, -math.inf
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["vm", "timestamp", "cpu_pct", "mem_mib", "vcpus", "mem_capacity_mib"])
        for row in rows:
            w.writerow(row)
            count, first, last = count + 1, min(first, row[1]), max(last, row[1])
    return (count, first, last) if count else (0, 0.0, 0.0)


def store_trace(engine: Engine, interval_s: int = 300) -> UsageTrace:
    """The store's history as a :class:`UsageTrace` (needs at least two scans of running VMs)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.csv"
        if not write_generic_csv(iter_history_rows(engine), path)[0]:
            raise UsageError("the store holds no VM history yet: run `llmvirt scan` at least twice")
        return load_generic(path, interval_s)


def scan_interval(engine: Engine, default: int = 300) -> int:
    """Median seconds between the store's latest snapshots (the replay's step; the latest thousand, so a long
    history is not read whole), ``default`` with fewer than two."""
    with engine.connect() as conn:
        times = [t for (t,) in conn.execute(select(HostSnapshotRow.taken_at).distinct()
                                            .order_by(HostSnapshotRow.taken_at.desc()).limit(1001))][::-1]
    gaps = sorted((b - a).total_seconds() for a, b in zip(times, times[1:], strict=False))
    return max(1, int(round(gaps[len(gaps) // 2]))) if gaps else default
