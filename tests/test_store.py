"""The SQLite store: file mode, WAL, history, utilisation, pruning, concurrency, bad files."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import fixture_uri
from sqlalchemy import func, select

from llmvirt.errors import StoreError
from llmvirt.observe.inventory import scan_hosts
from llmvirt.store import database, registry, snapshots
from llmvirt.store.schema import HostSnapshotRow, VmSampleRow


def _engine(url: str):
    """The test's store: SQLite, or PostgreSQL under ``LLMVIRT_TEST_DB=postgresql`` (the ``db_url`` fixture)."""
    return database.open_engine(url)


def test_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    engine = database.open_engine(f"sqlite:///{tmp_path / 'x.db'}")
    registry.add_host(engine, registry.RegisteredHost("a", fixture_uri("busy-host.xml")))
    mode = stat.S_IMODE(os.stat(tmp_path / "x.db").st_mode)
    assert mode == 0o600
    with sqlite3.connect(tmp_path / "x.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert database.current_revision(engine) == database.head_revision()


def test_upgrade_is_idempotent(db_url: str) -> None:
    _engine(db_url)
    engine = _engine(db_url)
    database.upgrade(engine)
    assert database.current_revision(engine) == database.head_revision() == "0005"


def test_snapshots_are_history_and_give_utilisation(db_url: str) -> None:
    engine = _engine(db_url)
    registry.add_host(engine, registry.RegisteredHost("busy", fixture_uri("busy-host.xml")))
    first = scan_hosts([("busy", fixture_uri("busy-host.xml"), False)])
    t0 = datetime(2026, 1, 1, 12, 0, 0)
    snapshots.record_scan(engine, first, taken_at=t0)
    view = snapshots.latest(engine)[0]
    assert all(v.cpu_util is None for v in view.host.vms)  # one snapshot: no utilisation yet
    second = scan_hosts([("busy", fixture_uri("busy-host.xml"), False)])
    db1 = second.hosts[0].vm("db1")
    assert db1 is not None and db1.cpu_time_ns is not None
    first_db1 = first.hosts[0].vm("db1")
    assert first_db1 is not None and first_db1.cpu_time_ns is not None
    db1.cpu_time_ns = first_db1.cpu_time_ns + 60 * 10**9  # 60 s of CPU over 60 s on 4 vCPUs
    snapshots.record_scan(engine, second, taken_at=t0 + timedelta(seconds=60))
    view = snapshots.latest(engine)[0]
    got = view.host.vm("db1")
    assert got is not None and got.cpu_util == pytest.approx(0.25)
    with engine.connect() as c:
        assert c.execute(select(func.count()).select_from(HostSnapshotRow)).scalar() == 2
        assert c.execute(select(func.count()).select_from(VmSampleRow)).scalar() == 6


def test_prune_keeps_latest(db_url: str) -> None:
    engine = _engine(db_url)
    registry.add_host(engine, registry.RegisteredHost("s", fixture_uri("busy-host.xml")))
    res = scan_hosts([("s", fixture_uri("busy-host.xml"), False)])
    assert len(res.hosts[0].vms) == 3
    old = datetime(2020, 1, 1)
    for i in range(3):
        snapshots.record_scan(engine, res, taken_at=old + timedelta(days=i))
    assert snapshots.prune(engine, timedelta(days=30)) == 2
    assert snapshots.latest(engine)[0].scanned_at == old + timedelta(days=2)
    with engine.connect() as c:  # the pruned snapshots' VM samples go with them (ON DELETE CASCADE)
        left = c.execute(select(func.count()).select_from(VmSampleRow)).scalar()
        assert c.execute(select(func.count()).select_from(HostSnapshotRow)).scalar() == 1 and left == 3


def test_failed_host_keeps_its_last_good_snapshot(db_url: str) -> None:
    engine = _engine(db_url)
    registry.add_host(engine, registry.RegisteredHost("busy", fixture_uri("busy-host.xml")))
    snapshots.record_scan(engine, scan_hosts([("busy", fixture_uri("busy-host.xml"), False)]))
    bad = scan_hosts([("busy", "qemu+unix:///system?socket=/nonexistent", False)])
    snapshots.record_scan(engine, bad)
    view = snapshots.latest(engine)[0]
    assert view.last_error and "/nonexistent" in view.last_error
    assert len(view.host.vms) == 3  # nothing already stored is lost


def test_corrupted_file_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    path.write_bytes(b"this is not sqlite" * 100)
    before = path.read_bytes()
    with pytest.raises(StoreError, match="corrupted"):
        database.open_engine(f"sqlite:///{path}")
    assert path.read_bytes() == before


def test_truncated_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    database.open_engine(f"sqlite:///{path}").dispose()
    data = path.read_bytes()
    path.write_bytes(data[:100] + b"\xff" * (len(data) - 100))
    with pytest.raises(StoreError):
        database.open_engine(f"sqlite:///{path}")


def test_unwritable_directory(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        target = Path("/proc/llmvirt/x.db")  # not creatable even for root
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        target = ro / "x.db"
    with pytest.raises(StoreError, match="not writable"):
        database.open_engine(f"sqlite:///{target}")


WRITER = """
import sys
from llmvirt.observe.inventory import scan_hosts
from llmvirt.store import database, snapshots
engine = database.open_engine(sys.argv[1])
uri = sys.argv[2]
for _ in range(15):
    snapshots.record_scan(engine, scan_hosts([("busy", uri, False)]))
"""


def test_two_processes_write_at_once(db_url: str) -> None:
    url = db_url
    engine = database.open_engine(url)
    registry.add_host(engine, registry.RegisteredHost("busy", fixture_uri("busy-host.xml")))
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, fixture_uri("busy-host.xml")])
             for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    with engine.connect() as c:
        assert c.execute(select(func.count()).select_from(HostSnapshotRow)).scalar() == 30
        assert c.execute(select(func.count()).select_from(VmSampleRow)).scalar() == 90
    path = database.sqlite_path(url)
    if path is not None:
        with sqlite3.connect(path) as raw:
            assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_two_processes_create_the_schema_at_once(db_url: str) -> None:
    url = db_url
    code = "import sys; from llmvirt.store import database; database.open_engine(sys.argv[1])"
    procs = [subprocess.Popen([sys.executable, "-c", code, url]) for _ in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    assert database.current_revision(database.open_engine(url)) == database.head_revision()


def test_upgrade_from_revision_0001_keeps_data(db_url: str) -> None:
    """A store created by the first release upgrades in place; nothing stored is lost."""
    from alembic import command

    url = db_url
    engine = database.open_engine(url, migrate=False)
    cfg = database.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    registry.add_host(engine, registry.RegisteredHost("a", fixture_uri("small-host.xml")))
    engine = database.open_engine(url)
    assert database.current_revision(engine) == database.head_revision()
    assert [h.name for h in registry.list_hosts(engine)] == ["a"]


def test_schema_head_constant_is_alembics_head() -> None:
    """Opening a store compares against SCHEMA_HEAD without loading Alembic: it must name the newest migration."""
    assert database.SCHEMA_HEAD == database.head_revision()


def test_one_vms_history_is_read_by_its_index(db_url: str) -> None:
    """A VM's last samples, oldest first, only its own; the (uuid, snapshot) index exists on both dialects."""
    from sqlalchemy import inspect

    engine = _engine(db_url)
    registry.add_host(engine, registry.RegisteredHost("busy", fixture_uri("busy-host.xml")))
    t0 = datetime(2026, 1, 1, 12, 0, 0)
    for i in range(5):
        res = scan_hosts([("busy", fixture_uri("busy-host.xml"), False)])
        db1 = res.hosts[0].vm("db1")
        assert db1 is not None
        db1.cpu_time_ns = i * 30 * 10**9
        snapshots.record_scan(engine, res, taken_at=t0 + timedelta(minutes=5 * i))
    uuid = db1.uuid
    got = snapshots.one_vm_usage(engine, uuid, 3)
    assert [round(t - got[0][0]) for t, _, _ in got] == [0, 300, 600]  # the last three of five, in order
    assert [c for _, _, c in got] == [60.0, 90.0, 120.0]
    assert snapshots.one_vm_usage(engine, "00000000-0000-0000-0000-000000000000", 3) == []
    indexes = {ix["name"]: ix["column_names"] for ix in inspect(engine).get_indexes("vm_samples")}
    assert indexes["ix_vm_samples_uuid_snapshot"] == ["uuid", "snapshot_id"]


def _scan_at(engine, minute: int, db1_cpu_ns: int) -> str:  # noqa: ANN001
    """Record a scan of the busy fixture host ``minute`` minutes after noon with db1's CPU counter at
    ``db1_cpu_ns``; returns db1's uuid."""
    res = scan_hosts([("busy", fixture_uri("busy-host.xml"), False)])
    db1 = res.hosts[0].vm("db1")
    assert db1 is not None
    db1.cpu_time_ns = db1_cpu_ns
    snapshots.record_scan(engine, res, taken_at=datetime(2026, 1, 1, 12, 0, 0) + timedelta(minutes=minute))
    return db1.uuid


def test_the_scan_recoverys_hour_is_one_scan_every_five_minutes(db_url: str) -> None:
    """Scanned every minute for 70 minutes, the learned scan recovery's hour is the 13 scans 5 minutes apart ending
    with the latest, so each of its 12 samples is the VM's mean over 5 minutes, as in its training traces (the last
    13 scans would be 13 minutes of 1-minute readings). Scanned every 5 minutes, the hour is the last scans; a
    missed scan ends it there. The detectors' and the forecast's history skips the missed scan instead."""
    engine = _engine(db_url)
    registry.add_host(engine, registry.RegisteredHost("busy", fixture_uri("busy-host.xml")))
    cpu_ns = 0
    for minute in range(71):  # one core busy for 5 minutes, then 5 idle, ...
        uuid = _scan_at(engine, minute, cpu_ns)
        cpu_ns += (minute // 5 % 2) * 60 * 10**9
    hour = snapshots.vm_scan_history(engine, 13)[uuid]
    assert [round(c, 6) for c, _ in hour] == [0.0, 1.0] * 6  # 5-minute means, steps ending at 15, 20, ..., 70
    cpus = scan_hosts([("busy", fixture_uri("busy-host.xml"), False)]).hosts[0].cpus
    assert [share for _, share in hour] == pytest.approx([c / cpus for c, _ in hour], abs=1e-4)  # + idle guests
    vcpus = 4  # db1's
    assert snapshots.vm_cpu_history(engine, 5)[uuid] == pytest.approx([0.0, 1 / vcpus] * 2)  # a share of its vCPUs
    for minute in (75, 80, 85, 90, 95, 105, 110, 115, 120):  # every 5 minutes, but not at 100
        uuid = _scan_at(engine, minute, cpu_ns)
    assert len(snapshots.vm_scan_history(engine, 13)[uuid]) == 3  # 105 to 120
    assert len(snapshots.vm_cpu_history(engine, 13)[uuid]) == 11  # 60 to 120 without 100: 12 scans, 11 samples
