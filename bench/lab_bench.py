"""Benchmark the lab: `lab up --hosts 3 --vms 6` cold vs warm image cache, and one live migration
through the libvirt Python API vs `virsh migrate`, alternated.

Usage (root): python bench/lab_bench.py [--rounds 4] [--dir /tmp/llmvirt-lab-bench]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import date
from pathlib import Path

import libvirt

from llmvirt.lab import lab
from llmvirt.store import database

FLAGS = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE


def timed_up(lab_dir: Path, engine, cold: bool) -> float:  # noqa: ANN001
    """Seconds for `lab up --hosts 3 --vms 6` (cold: image cache removed first)."""
    lab.down(lab_dir, engine, quiet=True)
    if cold:
        shutil.rmtree(lab_dir / "image", ignore_errors=True)
    t0 = time.perf_counter()
    lab.up(lab_dir, 3, 6, engine, say=lambda *_: None)
    return time.perf_counter() - t0


def migrate_api(src_uri: str, dst_uri: str, vm: str) -> float:
    """One live migration through virDomainMigrate3."""
    src, dst = libvirt.open(src_uri), libvirt.open(dst_uri)
    try:
        t0 = time.perf_counter()
        src.lookupByName(vm).migrate3(dst, {libvirt.VIR_MIGRATE_PARAM_URI: "tcp://127.0.0.1"}, FLAGS)
        return time.perf_counter() - t0
    finally:
        src.close()
        dst.close()


def migrate_virsh(src_uri: str, dst_uri: str, vm: str) -> float:
    """One live migration through `virsh migrate` (same flags, same migration URI)."""
    t0 = time.perf_counter()
    subprocess.run(["virsh", "-c", src_uri, "migrate", "--live", "--persistent", "--undefinesource",
                    vm, dst_uri, "tcp://127.0.0.1"], check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    """Run both measurements and print Markdown tables."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="llmvirt-lab-bench-"))
    lab_dir = args.dir or work / "lab"
    engine = database.open_engine(f"sqlite:///{work / 'bench.db'}")
    print(f"# lab bench, {platform.machine()} {os.cpu_count()} CPUs, {date.today()}")
    cold = timed_up(lab_dir, engine, cold=True)
    warm = timed_up(lab_dir, engine, cold=False)
    state = lab.LabState.load(lab_dir)
    assert state is not None
    print(f"\n| lab up --hosts 3 --vms 6 | seconds |\n|---|---|\n| cold image cache | {cold:.1f} |"
          f"\n| warm image cache | {warm:.1f} |\n\nguests run as type='{state.virt_type}'")
    a, b = state.hosts[0].uri, state.hosts[1].uri
    api, virsh = [], []
    here, there = a, b
    for _ in range(args.rounds):  # alternate methods, ping-ponging vm-1 between lab-1 and lab-2
        api.append(migrate_api(here, there, "vm-1"))
        here, there = there, here
        virsh.append(migrate_virsh(here, there, "vm-1"))
        here, there = there, here
    print("\n| method | migrations | median s | min s | max s |\n|---|---|---|---|---|")
    for name, xs in (("libvirt Python API (migrate3)", api), ("virsh migrate", virsh)):
        print(f"| {name} | {len(xs)} | {statistics.median(xs):.2f} | {min(xs):.2f} | {max(xs):.2f} |")
    print(f"\nratio API / virsh (medians): {statistics.median(api) / statistics.median(virsh):.2f}")
    lab.down(lab_dir, engine, quiet=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
