"""Benchmark: scan and store 50 hosts x 100 VMs on libvirt test-driver hosts generated on the fly.

Usage: python bench/scan_bench.py [--hosts 50] [--vms 100] [--scans 3]
Prints wall time per scan, VMs stored per second and database growth per snapshot, side by side for the two
ways llmvirt scans: one-shot (``llmvirt scan`` from cron: every host opened and closed) and a long-running
controller's (``llmvirt controller run``: connections and parsed definitions kept between scans).
Goal (issues 2 and 19): >= 5,000 VMs/s and <= 2 MB per 5,000-VM snapshot.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from llmvirt.observe.host_sessions import HostSessions
from llmvirt.observe.inventory import scan_hosts
from llmvirt.store import database, registry, snapshots

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from pg_server import PostgresServer  # noqa: E402 - the tests' throwaway server

DOMAIN = """  <domain type='test'>
    <name>vm-{h}-{i}</name><uuid>{uuid}</uuid>
    <memory unit='MiB'>{mem}</memory><currentMemory unit='MiB'>{cur}</currentMemory>
    <vcpu placement='static'>{vcpus}</vcpu>{pin}
    <os><type>hvm</type></os>
    <devices><memballoon model='virtio'><stats period='10'/></memballoon></devices>
  </domain>
"""


def host_xml(h: int, vms: int) -> str:
    """A test-driver host file with ``vms`` domains, every fourth one pinned."""
    doms = []
    for i in range(vms):
        pin = f"<cputune><vcpupin vcpu='0' cpuset='{i % 64}'/></cputune>" if i % 4 == 0 else ""
        doms.append(DOMAIN.format(h=h, i=i, uuid=f"{h:08x}-0000-4000-8000-{i:012x}", mem=1024 * (1 + i % 8),
                                  cur=1024 * (1 + i % 8) - 256 * (i % 3), vcpus=1 + i % 4, pin=pin))
    return ("<node><cpu><mhz>2600</mhz><model>bench</model><active>64</active><nodes>2</nodes>"
            "<sockets>1</sockets><cores>32</cores><threads>1</threads></cpu><memory>536870912</memory>\n"
            + "".join(doms) + "</node>\n")


def db_bytes(path: Path) -> int:
    """Database size on disk after a WAL checkpoint."""
    import sqlite3

    with sqlite3.connect(path) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


def connect_only(targets: list[tuple[str, str, bool]], workers: int) -> float:
    """Seconds to open and close every host: for the test driver, loading its XML file."""
    import libvirt

    from llmvirt.observe.inventory import run_bounded

    def opener(uri: str):  # noqa: ANN202
        def run():  # noqa: ANN202
            libvirt.open(uri).close()

        return run

    t0 = time.perf_counter()
    run_bounded([(n, opener(u)) for n, u, _ in targets], workers, 60)
    return time.perf_counter() - t0


def run_store(url: str, db: Path | None, targets: list[tuple[str, str, bool]], args: argparse.Namespace) -> None:
    """Every mode's scans into one store, one table row each; ``db``: the SQLite file whose growth is shown."""
    engine = database.open_engine(url)
    for name, uri, _ in targets:
        registry.add_host(engine, registry.RegisteredHost(name, uri))
    n_vms = args.hosts * args.vms
    store = "SQLite" if db is not None else "PostgreSQL"
    base = db_bytes(db) if db is not None else 0
    modes = (("one-shot", None), ("controller, definitions parsed every scan", HostSessions(False)),
             ("controller", HostSessions()))
    for mode, sessions in modes:
        for s in range(args.scans):
            t0 = time.perf_counter()
            res = scan_hosts(targets, workers=args.workers, timeout=60, sessions=sessions)
            t1 = time.perf_counter()
            snapshots.record_scan(engine, res)
            t2 = time.perf_counter()
            assert not res.failures and sum(len(h.vms) for h in res.hosts) == n_vms
            size = db_bytes(db) if db is not None else 0
            conn = f"{connect_only(targets, args.workers):.3f}" if sessions is None else "kept"
            print(f"| {store} | {mode} | {s + 1} | {t1 - t0:.3f} | {conn} | {t2 - t1:.3f} | {t2 - t0:.3f} "
                  f"| {n_vms / (t2 - t0):,.0f} | {f'{size - base:,}' if db is not None else '-'} |")
            base = size
        if sessions is not None:
            sessions.close()
    engine.dispose()


def main() -> None:
    """Run the benchmark and print a Markdown table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--vms", type=int, default=100)
    ap.add_argument("--scans", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--stores", default="sqlite,postgresql", help="sqlite, postgresql or both (side by side)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        targets = []
        for h in range(args.hosts):
            f = root / f"host{h}.xml"
            f.write_text(host_xml(h, args.vms))
            targets.append((f"h{h}", f"test://{f}", False))
        print(f"# scan bench: {args.hosts} hosts x {args.vms} VMs = {args.hosts * args.vms} VMs, "
              f"{platform.machine()} {os.cpu_count()} CPUs, {date.today()}")
        print(f"workers={args.workers}. 'connect alone' is opening each test-driver host, i.e. libvirt parsing the "
              "host's XML file of 100 domain definitions; a running libvirtd does no such work per connection. "
              "'controller' keeps each connection (its first scan opens them) and the definitions it parsed.")
        print("| store | mode | scan | scan wall s | connect alone s | store s | total s | VMs/s total "
              "| DB growth bytes |")
        print("|---|---|---|---|---|---|---|---|---|")
        for store in args.stores.split(","):
            if store == "sqlite":
                run_store(f"sqlite:///{root / 'bench.db'}", root / "bench.db", targets, args)
                continue
            server = PostgresServer.start(root / "pg")
            try:
                run_store(server.new_database(), None, targets, args)
            finally:
                server.stop()


if __name__ == "__main__":
    main()
