"""What ``tune --from-store --days N`` saves on a long history: seconds and peak memory to read the store's days.

A SQLite store holds DAYS days of five-minute scans of a 100-VM fleet (10 hosts of 10 VMs, the synthetic fleet of
``bench/store_scale.py``). ``store_tuning.history_days`` turns the history into the simulator's days (the store's
rows read, written as the generic CSV, the CSV loaded, every day's start placement found) once for the whole
history and once for the latest N days. Peak memory is Python's own allocations during the call (tracemalloc,
numpy's arrays included); the simulations that follow are not in these figures (they scale with the days kept).

Usage: python bench/store_history_window.py [--days 30] [--last 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import tracemalloc
from datetime import date, datetime, timedelta
from pathlib import Path

from store_scale import fleet, register

from llmvirt.bench.store_tuning import history_days
from llmvirt.store import database, snapshots


def read(engine, last: int | None) -> tuple[float, float, int]:  # noqa: ANN001
    """Seconds, peak MiB and days (tuning + held back) of ``history_days``: timed in one call, its memory traced
    in another (tracing slows Python several times over)."""
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        train, held = history_days(engine, Path(tmp), last)
        seconds = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        tracemalloc.start()
        history_days(engine, Path(tmp), last)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return seconds, peak, len(train) + len(held)


def main() -> None:
    """Build the store, then time both reads twice each (the second read of each is reported too)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=30, help="days of scans in the store")
    ap.add_argument("--last", type=int, default=3, help="N of --days N")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = database.open_engine(f"sqlite:///{tmp}/store.db")
        register(engine, fleet(10, 10, "w"))
        t0 = datetime(2026, 11, 1)
        t = time.perf_counter()
        for s in range(args.days * 288 + 2):
            snapshots.record_scan(engine, fleet(10, 10, "w", s), taken_at=t0 + timedelta(minutes=5 * s))
        built = time.perf_counter() - t
        size = os.path.getsize(f"{tmp}/store.db") / 2**20
        print(f"{date.today()} {platform.node()} {os.cpu_count()} CPUs; store: {args.days} days of 100 VMs, "
              f"{size:.0f} MiB, built in {built:.0f} s")
        print("| read | days | seconds (two runs) | peak MiB (two runs) |\n|---|---|---|---|")
        for label, last in (("the whole history", None), (f"--days {args.last}", args.last)):
            runs = [read(engine, last) for _ in range(2)]
            print(f"| {label} | {runs[0][2]} | {runs[0][0]:.2f}, {runs[1][0]:.2f} | "
                  f"{runs[0][1]:.0f}, {runs[1][1]:.0f} |")


if __name__ == "__main__":
    main()
