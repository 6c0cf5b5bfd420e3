"""The set-wise latest view equals the per-host reads it replaced (issue 19), on random histories: hosts
that fail, partial scans (``scan --host``), VMs that migrate between hosts, more scans than the window,
on SQLite and (with LLMVIRT_TEST_DB=postgresql) PostgreSQL."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from llmvirt.model.cluster import Balloon, Host, ScanResult, Vm
from llmvirt.store import database, latest_view, registry, snapshots
from llmvirt.store.schema import HostRow, HostSnapshotRow, VmSampleRow


def _oracle(conn: Session, row: HostRow) -> latest_view.HostView:
    """The per-host reads (five queries per host) as they were before the set-wise view."""
    host = Host(name=row.name, uri=row.uri, maintenance=row.maintenance)
    view = latest_view.HostView(host=host, source=row.source, scanned_at=None, last_error=None, previous_at=None)
    last = conn.execute(select(HostSnapshotRow).where(HostSnapshotRow.host_id == row.id)
                        .order_by(HostSnapshotRow.id.desc()).limit(1)).scalars().first()
    if last is not None and not last.ok:
        view.last_error = last.error
    ids = snapshots.latest_ok_ids(conn, row.id, 2)
    if not ids:
        return view
    snap = conn.execute(select(HostSnapshotRow).where(HostSnapshotRow.id == ids[0][0])).scalars().one()
    rows = conn.execute(select(VmSampleRow).where(VmSampleRow.snapshot_id == snap.id)
                        .order_by(VmSampleRow.id)).scalars().all()
    latest_view._fill(view, snap, list(rows))
    if len(ids) == 2:
        view.previous_at = ids[1][1]
        scan = select(HostSnapshotRow.scan_id).where(HostSnapshotRow.id == ids[1][0]).scalar_subquery()
        prev = dict(conn.execute(select(VmSampleRow.uuid, VmSampleRow.cpu_time_ns)
                                 .join(HostSnapshotRow, HostSnapshotRow.id == VmSampleRow.snapshot_id)
                                 .where(HostSnapshotRow.scan_id == scan,
                                        VmSampleRow.uuid.in_([v.uuid for v in host.vms]))).all())
        latest_view._apply_utilisation(host.vms, prev, (ids[0][1] - ids[1][1]).total_seconds())
    return view


def _history(engine, rng: random.Random, hosts: int, scans: int) -> None:  # noqa: ANN001
    names = [f"h{i}" for i in range(hosts)]
    for n in names:
        registry.add_host(engine, registry.RegisteredHost(n, f"qemu+ssh://root@{n}/system"))
    where = {f"vm{j}": rng.choice(names) for j in range(hosts * 3)}
    counter = {vm: 0 for vm in where}
    t0 = datetime(2026, 11, 1)
    for s in range(scans):
        for vm in rng.sample(sorted(where), k=2):  # a couple of migrations per interval
            where[vm] = rng.choice(names)
        scanned = names if rng.random() < 0.7 else rng.sample(names, k=max(1, hosts // 3))  # partial scans
        failed = {n for n in scanned if rng.random() < 0.15}
        out = []
        for n in scanned:
            if n in failed:
                continue
            vms = []
            for vm, h in sorted(where.items()):
                if h == n:
                    counter[vm] += rng.randint(0, 300) * 10**9
                    vms.append(Vm(vm, f"00000000-0000-4000-8000-{int(vm[2:]):012d}", vcpus=2, memory_mib=2048,
                                  current_memory_mib=2048, balloon=Balloon(current_mib=2048), cpu_time_ns=counter[vm],
                                  state=rng.choice(["running"] * 5 + ["paused"])))
            out.append(Host(n, f"qemu+ssh://root@{n}/system", cpus=16, memory_mib=65536, hostname=n, vms=vms))
        snapshots.record_scan(engine, ScanResult(out, {n: f"{n} unreachable at scan {s}" for n in failed}, 1.0),
                              taken_at=t0 + timedelta(minutes=5 * s))


@pytest.mark.parametrize("seed,hosts,scans", [(0, 6, 3), (1, 8, 12), (2, 12, 20), (3, 5, 30)])
def test_set_wise_view_equals_the_per_host_reads(db_url: str, seed: int, hosts: int, scans: int) -> None:
    engine = database.open_engine(db_url)
    _history(engine, random.Random(seed), hosts, scans)
    got = snapshots.latest(engine)
    with Session(engine) as s:
        want = [_oracle(s, r) for r in s.scalars(select(HostRow).order_by(HostRow.id)).all()]
    assert got == want
    assert any(v.last_error for v in got) and any(v.previous_at for v in got)  # the history exercised both
    assert any(vm.cpu_util is not None for v in got for vm in v.host.vms)
    names = [v.host.name for v in got][1::2]
    assert snapshots.latest(engine, names) == [w for w in want if w.host.name in names]
