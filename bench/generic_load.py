"""Seconds to load a large generic-format trace (``traces.load_generic``): what `bench --trace FILE.csv` and
`tune --from-store` pay before any simulation.

The file is synthetic and the same on every run: VMS VMs sampled every five minutes for DAYS days (random CPU
percentages from a fixed seed, constant memory), written to a temporary directory as CSV, or with ``--parquet`` as
Parquet (the same rows, converted by pyarrow). Three loads, each timed.

Usage: python bench/generic_load.py [--vms 2000] [--days 2] [--parquet]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import random
import tempfile
import time
from datetime import date
from pathlib import Path

from llmvirt.sim.traces import load_generic


def write(path: Path, vms: int, days: int) -> int:
    """The synthetic trace at ``path``; its number of rows."""
    rng = random.Random(1)
    rows = 0
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["vm", "timestamp", "cpu_pct", "mem_mib"])
        for k in range(0, days * 86_400, 300):
            for i in range(vms):
                w.writerow([f"vm{i:05d}", 1_700_000_000 + k, rng.randint(0, 100), 1000])
                rows += 1
    return rows


def main() -> None:
    """Write the trace, load it three times, print the timings."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=2000)
    ap.add_argument("--days", type=int, default=2)
    ap.add_argument("--parquet", action="store_true", help="load the same rows from a Parquet file")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.csv"
        rows = write(path, args.vms, args.days)
        if args.parquet:
            import pyarrow.csv as pa_csv
            import pyarrow.parquet as pq

            pq.write_table(pa_csv.read_csv(path), path.with_suffix(".parquet"))
            path = path.with_suffix(".parquet")
        times = []
        for _ in range(3):
            t = time.perf_counter()
            trace = load_generic(path)
            times.append(time.perf_counter() - t)
    print(f"{date.today()} {platform.node()} {os.cpu_count()} CPUs; {args.vms} VMs x {args.days} days = {rows:,} rows"
          f"{' (Parquet)' if args.parquet else ''} -> {trace.cpu_mhz.shape}; "
          f"load_generic s: {', '.join(f'{t:.2f}' for t in times)}")


if __name__ == "__main__":
    main()
