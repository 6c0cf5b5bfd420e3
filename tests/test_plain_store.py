"""The store's hot path in plain SQL (issue 18): ``hosts list``, ``status`` and ``scan`` on a SQLite store at the
newest schema never import SQLAlchemy, and what they read and write through the stdlib driver is exactly what
the SQLAlchemy path reads and writes (the same SQL runs on PostgreSQL through an engine: the whole suite under
``LLMVIRT_TEST_DB=postgresql``)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import fixture_uri
from sqlalchemy import select
from sqlalchemy.orm import Session
from test_latest_view import _history

from llmvirt.errors import StoreError
from llmvirt.model.action import Action
from llmvirt.model.cluster import Balloon, Host, ScanResult, Vm
from llmvirt.store import database, journal, latest_view, pending_work, registry, scan_writer, snapshots
from llmvirt.store.opening import open_store
from llmvirt.store.plain import SqliteFile, ViaEngine, expand
from llmvirt.store.schema import HostSnapshotRow, VmSampleRow

HEAVY = ("sqlalchemy", "libvirt", "torch", "numpy")
_PROBE = ("import atexit, runpy, sys\n"
          f"atexit.register(lambda: print('LOADED=' + ','.join(m for m in {HEAVY!r} if m in sys.modules),"
          " file=sys.stderr))\n"
          "sys.argv = ['llmvirt', *sys.argv[1:]]\n"
          "runpy.run_module('llmvirt', run_name='__main__')\n")


def _run(env: dict[str, str], *args: str) -> tuple[int, set[str], str]:
    res = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, env=env,
                         timeout=120, cwd="/")
    loaded = res.stderr.strip().splitlines()[-1].removeprefix("LOADED=")
    return res.returncode, set(loaded.split(",")) - {""}, res.stdout + res.stderr


def test_light_commands_load_nothing_heavy(tmp_path: Path) -> None:
    """What each light command may load: no SQLAlchemy on the store's hot path, libvirt only to scan, never
    torch; ``--help`` nothing at all."""
    (tmp_path / "empty.toml").write_text("")
    env = {**os.environ, "LLMVIRT_DB": f"sqlite:///{tmp_path / 's.db'}", "LLMVIRT_CONFIG": str(tmp_path / "empty.toml")}
    assert _run(env, "hosts", "add", "busy", fixture_uri("busy-host.xml"))[0] == 0  # creates the schema
    allowed = {("--help",): set(), ("hosts", "list"): set(), ("hosts", "list", "--json"): set(),
               ("scan",): {"libvirt"}, ("status",): set(), ("status", "--json"): set()}
    for args, may in [*allowed.items(), (("scan",), {"libvirt"})]:
        code, loaded, text = _run(env, *args)
        assert code == 0, text
        assert loaded <= may, (args, loaded)
    code, loaded, text = _run(env, "place", "--vcpus", "1", "--memory", "1G")  # the probe can tell: heavier
    assert code == 0 and {"sqlalchemy", "numpy"} <= loaded, (loaded, text)  # commands load what they need


def test_a_config_host_changed_in_the_file_is_synced_on_the_light_path(tmp_path: Path) -> None:
    cfg = tmp_path / "llmvirt.toml"
    env = {**os.environ, "LLMVIRT_DB": f"sqlite:///{tmp_path / 's.db'}", "LLMVIRT_CONFIG": str(cfg)}
    cfg.write_text(f'[hosts.a]\nuri = "{fixture_uri("busy-host.xml")}"\n')
    assert "busy-host.xml" in _run(env, "hosts", "list", "--json")[2]
    cfg.write_text(f'[hosts.a]\nuri = "{fixture_uri("small-host.xml")}"\n')
    text = _run(env, "hosts", "list", "--json")[2]
    assert "small-host.xml" in text and "busy-host.xml" not in text, text


def test_the_writers_columns_are_the_schemas() -> None:
    assert list(scan_writer._SAMPLE_COLUMNS) == [c.name for c in VmSampleRow.__table__.columns if c.name != "id"]
    assert list(scan_writer._HOST_COLUMNS) == [c.name for c in HostSnapshotRow.__table__.columns if c.name != "id"]


@pytest.mark.parametrize("seed,hosts,scans", [(0, 6, 3), (2, 12, 20)])
def test_latest_through_the_stdlib_driver_equals_the_engines(tmp_path: Path, seed: int, hosts: int, scans: int
                                                             ) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    engine = database.open_engine(url)
    _history(engine, random.Random(seed), hosts, scans)
    plain = open_store(url)
    assert isinstance(plain, SqliteFile)
    assert latest_view.latest(plain) == latest_view.latest(engine)
    assert latest_view.latest(plain, ["h1", "h3"]) == latest_view.latest(engine, ["h1", "h3"])
    assert registry.list_hosts(plain) == registry.list_hosts(engine)


def _scan(t: int) -> ScanResult:
    vm = Vm("web", "00000000-0000-4000-8000-000000000001", vcpus=2, memory_mib=2048, current_memory_mib=1024,
            balloon=Balloon(current_mib=1024, unused_mib=100, available_mib=900), cpu_time_ns=t * 10**9,
            pinning={0: (1, 2)}, state="running")
    return ScanResult([Host("h0", "test:///default", cpus=8, memory_mib=16384, hostname="h0", vms=[vm],
                            notes=["a note"])], {"h1": "unreachable"}, 0.5)


def test_a_scan_written_through_the_stdlib_driver_reads_back_as_the_engines(tmp_path: Path) -> None:
    stores = {}
    for kind in ("engine", "plain"):
        url = f"sqlite:///{tmp_path / f'{kind}.db'}"
        engine = database.open_engine(url)
        for n in ("h0", "h1"):
            registry.add_host(engine, registry.RegisteredHost(n, "test:///default"))
        store = engine if kind == "engine" else open_store(url)
        for i in range(2):
            snapshots.record_scan(store, _scan(10 * i), taken_at=datetime(2026, 12, 1) + timedelta(minutes=5 * i))
        with Session(engine) as s:  # the ORM reads typed values back: times, JSON, booleans
            snaps = [(r.taken_at, r.ok, r.error, r.detail) for r in s.scalars(select(HostSnapshotRow))]
            samples = [(r.name, r.detail, r.cpu_time_ns) for r in s.scalars(select(VmSampleRow))]
        stores[kind] = (snaps, samples, latest_view.latest(engine), snapshots.vm_cpu_history(engine, 5))
    assert stores["plain"] == stores["engine"]
    snaps, samples, views, cpu = stores["plain"]
    assert isinstance(snaps[0][0], datetime) and snaps[0][3]["notes"] == ["a note"] and samples[0][1] == {
        "pin": {"0": [1, 2]}}
    assert views[0].host.vms[0].cpu_util == round(10 / 300 / 2, 4) and cpu


def test_expand_puts_placeholders_never_values() -> None:
    sql, params = expand("SELECT 1 WHERE a IN (:ids*) AND b IN (:names*)", ids=[3, 4], names=["x'; DROP"])
    assert sql == "SELECT 1 WHERE a IN (:ids_0, :ids_1) AND b IN (:names_0)"
    assert params == {"ids_0": 3, "ids_1": 4, "names_0": "x'; DROP"}
    assert expand("a IN (:ids*)", ids=[])[0] == "a IN (NULL)"


def test_the_cheap_checks_agree_with_the_journal(db_url: str) -> None:
    engine = database.open_engine(db_url)
    store = ViaEngine(engine)
    assert not pending_work.any_open_action(store) and not pending_work.any_outcome_due(store, 0)
    plan = journal.create_plan(engine, journal.NewPlan("balance", "test", {}, [
        Action("migrate", "web", "a", dst="b", uuid="00000000-0000-4000-8000-000000000001")]))
    assert pending_work.any_open_action(store) == bool(journal.open_actions(engine)) is True
    (entry,) = journal.plan_actions(engine, plan)
    journal.set_status(engine, entry.id, "done")
    assert not pending_work.any_open_action(store)
    assert not pending_work.any_outcome_due(store, 3600)  # its window is still open
    assert pending_work.any_outcome_due(store, 0, now=datetime.now(UTC).replace(tzinfo=None) + timedelta(days=1))


def test_a_broken_store_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    database.open_engine(f"sqlite:///{path}")
    store = open_store(f"sqlite:///{path}")
    for extra in tmp_path.glob("s.db-*"):  # the WAL could still hold every page
        extra.unlink()
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="s.db"):
        registry.list_hosts(store)
    with pytest.raises(StoreError):
        open_store(f"sqlite:///{path}")
