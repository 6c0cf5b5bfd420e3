"""Store at fleet scale (issue 19): SQLite and PostgreSQL side by side in one run.

For fleets of 1,000 hosts x 10 VMs and 10,000 hosts x 10 VMs (100,000 VMs): the seconds to store one
scan (``snapshots.record_scan``, one transaction), to read the fleet's latest view back after a second
scan (``snapshots.latest_cluster``, what every plan starts from), to plan a rebalance on it with the
default policy (every tenth host is a hotspot), and to read one VM's week of history
(``snapshots.one_vm_usage``, 2,016 five-minute samples) from a store that holds a week of scans of a
100-VM fleet beside the big scans. The PostgreSQL server is a throwaway cluster on this machine
(Debian's server, Unix socket, ``fsync=off`` as in the tests: a disk's flush cost is not measured).

Usage: python bench/store_scale.py [--sizes 1000,10000] [--week-vms 100]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

from llmvirt import plan_service
from llmvirt.model.cluster import Balloon, Host, ScanResult, Vm
from llmvirt.store import database, registry, snapshots

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from pg_server import PostgresServer  # noqa: E402 - the tests' throwaway server

WEEK = 7 * 288  #: five-minute samples in a week


def fleet(hosts: int, vms: int, prefix: str, step: int = 0) -> ScanResult:
    """A synthetic scan: ``hosts`` hosts of 16 CPUs with ``vms`` running VMs each (balloon stats, CPU time);
    every tenth host runs its VMs at 90 % (above its cores: a hotspot to plan for), the rest at 20 %."""
    out = []
    for h in range(hosts):
        load = 0.9 if h % 10 == 0 else 0.2
        guests = [Vm(f"{prefix}{h}-{i}", f"{h:08x}-{len(prefix):04x}-4000-8000-{i:012x}", vcpus=1 + i % 4,
                     max_vcpus=4, memory_mib=1024 * (1 + i % 8), current_memory_mib=1024 * (1 + i % 8),
                     balloon=Balloon(current_mib=1024, maximum_mib=1024 * (1 + i % 8), available_mib=1000,
                                     unused_mib=300 + i % 200, usable_mib=600),
                     cpu_time_ns=int(step * 300 * (1 + i % 4) * load * 10**9)) for i in range(vms)]
        out.append(Host(f"{prefix}{h}", f"qemu+ssh://root@{prefix}{h}/system", cpus=16, memory_mib=262144,
                        cpu_model="bench", cpu_mhz=2600, hostname=f"{prefix}{h}", vms=guests))
    return ScanResult(hosts=out, seconds=1.0)


def register(engine, result: ScanResult) -> None:  # noqa: ANN001
    """Register every host of ``result`` (one transaction per host, as `hosts add` does)."""
    for h in result.hosts:
        registry.add_host(engine, registry.RegisteredHost(h.name, h.uri))


def timed(fn, runs: int = 3) -> float:  # noqa: ANN001
    """Median seconds of ``runs`` calls."""
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def measure(url: str, sizes: list[int], week_vms: int) -> dict[str, float]:
    """Every figure for one store."""
    engine = database.open_engine(url)
    got: dict[str, float] = {}
    week_hosts = max(1, week_vms // 10)
    small = fleet(week_hosts, 10, "w")
    register(engine, small)
    t0 = datetime(2026, 11, 1)
    for s in range(WEEK):  # a week of scans of the small fleet
        snapshots.record_scan(engine, fleet(week_hosts, 10, "w", s), taken_at=t0 + timedelta(minutes=5 * s))
    for n in sizes:
        big = fleet(n, 10, f"b{n}-")
        register(engine, big)
        t = time.perf_counter()
        snapshots.record_scan(engine, big, taken_at=t0 + timedelta(days=8))
        got[f"store {n * 10:,} VMs s"] = time.perf_counter() - t
        snapshots.record_scan(engine, fleet(n, 10, f"b{n}-", 1), taken_at=t0 + timedelta(days=8, minutes=5))
        t = time.perf_counter()
        cluster = snapshots.latest_cluster(engine)  # the whole store's latest view: every fleet so far
        got[f"latest view after the {n * 10:,}-VM fleet's second scan s"] = time.perf_counter() - t
        t = time.perf_counter()
        plan = plan_service.rebalance_plan(engine, None, cluster, "balance", None, 10)
        got[f"plan on that view ({len(cluster.hosts):,} hosts) s"] = time.perf_counter() - t
        assert plan.moves, "the synthetic hotspots gave no move"
    uuid = small.hosts[0].vms[0].uuid
    rows = snapshots.one_vm_usage(engine, uuid, WEEK)
    assert len(rows) == WEEK, len(rows)
    got["one VM's week (2,016 samples) ms"] = 1000 * timed(lambda: snapshots.one_vm_usage(engine, uuid, WEEK), 5)
    engine.dispose()
    return got


def main() -> None:
    """Run both stores and print a Markdown table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000", help="fleet sizes in hosts (10 VMs each)")
    ap.add_argument("--week-vms", type=int, default=100)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        server = PostgresServer.start(Path(tmp) / "pg")
        try:
            pg = measure(server.new_database(), sizes, args.week_vms)
        finally:
            server.stop()
        lite = measure(f"sqlite:///{Path(tmp) / 'bench.db'}", sizes, args.week_vms)
    print(f"# store scale: {platform.machine()} {os.cpu_count()} CPUs, {date.today()}; "
          f"a week of scans of {args.week_vms} VMs in the store beside the big scans")
    print("| measure | SQLite | PostgreSQL |")
    print("|---|---|---|")
    for k in pg:
        print(f"| {k} | {lite[k]:.3f} | {pg[k]:.3f} |")


if __name__ == "__main__":
    main()
