"""``llmvirt tune --from-store``: the consolidation baselines tuned on the store's own history, split by time.

The store is filled as ``llmvirt scan`` fills it: real scans of libvirt's test driver, recorded every five
minutes, with CPU-time counters that follow a daily wave plus noise (so no two days are alike).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from conftest import fixture_uri

from llmvirt.bench import tune
from llmvirt.observe.inventory import scan_hosts
from llmvirt.sim import episodes
from llmvirt.sim.cloudsim_policies import make_policy, run_policy
from llmvirt.sim.engine import Simulation
from llmvirt.sim.own_fleet import OwnFleetDay, OwnHost
from llmvirt.sim.store_history import iter_history_rows, write_generic_csv
from llmvirt.store import database, registry, snapshots

T0 = datetime(2026, 11, 2, 0, 0, 0)
STEP_S = 300
VMS = 8
DEFAULT = "relative-tuned:gated-wake-thr-mmt"  #: policies/default/strategies.json's consolidation default


def _history(db_url: str, days: float) -> None:
    """``days`` of scans (plus one, as CPU use needs a pair) of eight running VMs on the test driver's hosts."""
    engine = database.open_engine(db_url)
    hosts = [("busy", fixture_uri("busy-host.xml"), False), ("spare", fixture_uri("small-host.xml"), False)]
    for name, uri, _ in hosts:
        registry.add_host(engine, registry.RegisteredHost(name, uri))
    res = scan_hosts(hosts)
    running = sorted((v for v in res.hosts[0].vms if v.state == "running"), key=lambda v: v.name)  # db1, web1
    vms = [dataclasses.replace(running[i % len(running)], name=f"vm{i}", uuid=f"{i:08x}-0000-4000-8000-{i:012x}")
           for i in range(VMS)]
    res.hosts[0].vms, res.hosts[1].vms = vms[0::2], vms[1::2]  # the odd VMs start on the spare host
    rng = np.random.default_rng(7)
    used_ns = np.zeros(VMS)
    for k in range(int(days * 86_400 / STEP_S) + 2):
        t = k * STEP_S
        if t == 86_400 + 2 * STEP_S:  # vm3 migrated to the busy host early on day 1
            res.hosts[1].vms.remove(vms[3])
            res.hosts[0].vms.append(vms[3])
        for i, v in enumerate(vms):
            v.cpu_time_ns = int(used_ns[i])
            wave = 0.5 + 0.4 * math.sin(2 * math.pi * (t / 86_400 + i / VMS))
            used_ns[i] += min(1.0, max(0.02, wave + rng.normal(0, 0.1))) * STEP_S * 1e9 * v.vcpus
        snapshots.record_scan(engine, res, taken_at=T0 + timedelta(seconds=t))


FLEET = (OwnHost("busy", 16, 2600, 65536), OwnHost("spare", 8, 2000, 16384))  #: the test driver's two hosts
#: where vm0..vm7 start each day: even on busy, odd on spare; on day 2 vm3 (moved on day 1) on busy
STARTS = {0: (0, 1, 0, 1, 0, 1, 0, 1), 1: (0, 1, 0, 1, 0, 1, 0, 1), 2: (0, 1, 0, 0, 0, 1, 0, 1)}


def _cost(path: Path, day: int, name: str) -> float:
    """``name``'s cost on day ``day`` of the history file on the test driver's hosts, run directly."""
    return round(tune.run_one(OwnFleetDay(str(path), day, FLEET, STARTS[day]), name)["cost"], 6)


def test_tune_from_store_tunes_on_earlier_days_and_checks_on_the_latest(cli, db_url: str, tmp_path: Path) -> None:
    _history(db_url, days=2)
    out_file = tmp_path / "mine.json"
    code, out, err = cli("tune", "--from-store", "--family", "thr-mmt", "--out", str(out_file), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc == json.loads(out_file.read_text())
    assert doc["source"] == "store"
    assert doc["train_days"] == ["store-history.csv:own:0"]
    check = doc["check"]
    assert check["days"] == ["store-history.csv:own:1"]
    best = doc["families"]["thr-mmt"]["best"]
    assert check["recommended"] == best and check["default"] == DEFAULT
    assert {r["name"] for r in check["runs"]} == {best, DEFAULT, tune.REFERENCE}
    # both halves recomputed directly on the same history: the grid from day 0 alone, the check from day 1 alone
    path = tmp_path / "store-history.csv"
    write_generic_csv(iter_history_rows(database.open_engine(db_url)), path)
    grid = {g["name"]: g["cost"] for g in doc["families"]["thr-mmt"]["grid"]}
    assert grid[tune.REFERENCE] == _cost(path, 0, tune.REFERENCE)
    assert grid[best] == min(grid.values())
    run = {r["name"]: r["cost"] for r in check["runs"]}
    assert run[best] == _cost(path, 1, best)
    assert run[DEFAULT] == _cost(path, 1, DEFAULT)
    assert run[tune.REFERENCE] != grid[tune.REFERENCE]  # the days differ: the check is not the tuning again


def test_tune_from_store_says_what_it_checked_and_what_to_run(cli, db_url: str) -> None:
    _history(db_url, days=2)
    code, out, err = cli("tune", "--from-store", "--family", "thr-mmt", "--family", "gated-wake-thr-mmt")
    assert code == 0, err
    assert "check on the held-back day, not tuned on" in out
    assert "(default)" in out and "(tuned)" in out
    assert "cost" in out and "x the default's" in out
    assert ("--policy baseline:" in out) != ("keep the default" in out or "keep it" in out)
    assert "written to" not in out  # the store's tuning goes nowhere unless --out names a file


def test_tune_from_store_with_one_day_checks_nothing_and_says_so(cli, db_url: str) -> None:
    _history(db_url, days=1)
    code, out, err = cli("tune", "--from-store", "--family", "thr-mmt")
    assert code == 0, err
    assert "no day held back" in out
    code, out, err = cli("tune", "--from-store", "--family", "thr-mmt", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert "check" not in doc and doc["train_days"] == ["store-history.csv:own:0"]


def test_tune_from_store_refuses_too_little_history_in_one_line(cli, db_url: str) -> None:
    code, out, err = cli("tune", "--from-store")
    assert code == 2 and "no VM history yet" in err and len(err.strip().splitlines()) == 1
    _history(db_url, days=0.25)
    code, out, err = cli("tune", "--from-store")
    assert code == 2 and "6.0 h of VM history" in err and "at least one whole day" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, out, err = cli("tune", "--from-store", "--trace", "/nonexistent")
    assert code == 2 and "drop --trace" in err
    code, out, err = cli("tune", "--from-store", "--fleet", "ibm")
    assert code == 2 and "--fleet" in err
    code, out, err = cli("tune")
    assert code == 2 and "--trace" in err
    code, out, err = cli("tune", "--usage-trace", "/nonexistent.csv")  # a usage trace adds to PlanetLab days
    assert code == 2 and "give at least one --trace" in err and len(err.strip().splitlines()) == 1


def test_the_days_run_on_the_operators_hosts_from_where_the_vms_were(cli, db_url: str, tmp_path: Path) -> None:
    _history(db_url, days=3)
    engine = database.open_engine(db_url)
    from llmvirt.bench.store_tuning import history_days

    train, held = history_days(engine, tmp_path)
    assert [d.day for d in train] == [0, 1] and [d.day for d in held] == [2]
    assert all(d.hosts == FLEET for d in train + held)
    assert [d.start_host for d in train + held] == [STARTS[0], STARTS[1], STARTS[2]]
    dc = episodes.datacenter(held[0])
    assert dc.total_mips.tolist() == [16 * 2600, 8 * 2000] and dc.ram_mb.tolist() == [65536, 16384]
    assert dc.vm_mips.tolist() == [4 * 2300, 2 * 2300] * 4  # vCPUs x the fleet's median MHz
    assert dc.vm_ram.tolist() == [8192, 4096] * 4
    assert dc.util.shape == (VMS, 289) and 0.02 <= dc.util.min() and dc.util.max() <= 1.0


def test_a_recorded_placement_is_kept_even_where_it_overcommits(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    rows = [(f"vm{i}", 300.0 * k, 50.0, 1024.0, 4, 2048.0) for i in range(6) for k in range(289)]
    write_generic_csv(rows, path)
    small = (OwnHost("a", 8, 2000, 65536), OwnHost("b", 8, 2000, 65536))
    day = OwnFleetDay(str(path), 0, small, (0, 0, 0, 0, 0, 1))  # 20 vCPUs on host a's 8 CPUs
    sim = Simulation(episodes.datacenter(day))
    run_policy(sim, make_policy("dvfs"))  # never migrates
    assert sim.vm_host.tolist() == [0, 0, 0, 0, 0, 1]


def test_days_reads_only_the_latest_days_of_history(cli, db_url: str, tmp_path: Path) -> None:
    _history(db_url, days=3)
    engine = database.open_engine(db_url)
    from llmvirt.bench.store_tuning import history_days

    train, held = history_days(engine, tmp_path, last=2)
    assert [d.day for d in train] == [0] and [d.day for d in held] == [1]
    assert [d.start_host for d in train + held] == [STARTS[1], STARTS[2]]  # the store's days 1 and 2
    start = T0 + timedelta(days=1)
    assert min(float(r[1]) for r in _csv_rows(tmp_path / "store-history.csv")) == start.timestamp()
    code, out, err = cli("tune", "--from-store", "--days", "2", "--family", "thr-mmt", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["train_days"] == ["store-history.csv:own:0"] and doc["check"]["days"] == ["store-history.csv:own:1"]
    for bad in (["--from-store", "--days", "0"], ["--days", "2", "--trace", "/nonexistent"]):
        code, out, err = cli("tune", *bad)
        assert code == 2 and "--days" in err and len(err.strip().splitlines()) == 1


def _csv_rows(path: Path) -> list[list[str]]:
    """The data rows of a generic-format CSV."""
    import csv

    with path.open() as f:
        return list(csv.reader(f))[1:]


def test_hold_back_checks_on_the_latest_days_by_their_mean(cli, db_url: str, tmp_path: Path) -> None:
    _history(db_url, days=3)
    code, out, err = cli("tune", "--from-store", "--hold-back", "2", "--family", "thr-mmt", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["train_days"] == ["store-history.csv:own:0"]
    assert doc["check"]["days"] == ["store-history.csv:own:1", "store-history.csv:own:2"]
    path = tmp_path / "store-history.csv"
    write_generic_csv(iter_history_rows(database.open_engine(db_url)), path)
    run = {r["name"]: r["cost"] for r in doc["check"]["runs"]}
    assert math.isclose(run[DEFAULT], (_cost(path, 1, DEFAULT) + _cost(path, 2, DEFAULT)) / 2, rel_tol=1e-6)
    code, out, err = cli("tune", "--from-store", "--hold-back", "2", "--family", "thr-mmt")
    assert code == 0, err
    text = " ".join(out.split())  # the tables wrap at 80 columns
    assert "check on the 2 held-back days, not tuned on" in text
    assert re.search(r"on the 2 held-back days \S+ cost [0-9.]+x the default's", text)  # the verdict
    from llmvirt.bench.store_tuning import history_days

    (tmp_path / "x").mkdir()
    train, held = history_days(database.open_engine(db_url), tmp_path / "x", hold=5)
    assert [d.day for d in train] == [0] and [d.day for d in held] == [1, 2]  # at least one day is tuned on
    for bad in (["--from-store", "--hold-back", "0"], ["--hold-back", "2", "--trace", "/nonexistent"]):
        code, out, err = cli("tune", *bad)
        assert code == 2 and "--hold-back" in err and len(err.strip().splitlines()) == 1
