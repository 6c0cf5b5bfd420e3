"""Validate the simulator against CloudSim 5.0's measured results (../shared/reference).

Usage: python bench/cloudsim_validation.py [--days all|20110303,...] [--policies thr-mmt-0.8,...]
Prints a Markdown table: simulator vs reference, relative difference, and whether it is within the
issue's bounds (energy and migrations +-10 %, SLAV +-25 %, DVFS energy +-3 %).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

from llmvirt.sim.cloudsim_policies import make_policy, run_policy
from llmvirt.sim.datacenter import cloudsim_datacenter
from llmvirt.sim.engine import Simulation
from llmvirt.sim.traces import load_planetlab

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DAYS = ("20110303", "20110306", "20110309", "20110325", "20110403", "20110411", "20110412")
POLICIES = ("dvfs", "thr-mmt-0.8", "iqr-mmt-1.5", "mad-mmt-2.5", "lr-mmt-1.2")


def reference() -> dict[str, dict[str, str]]:
    """Reference rows keyed by experiment name, e.g. 20110303_thr_mmt_0.8."""
    with (SHARED / "reference" / "cloudsim5_planetlab.csv").open() as f:
        return {row["experiment"]: row for row in csv.DictReader(f)}


def rel(a: float, b: float) -> float:
    """Relative difference of a against b."""
    return (a - b) / b if b else 0.0


def main() -> None:
    """Run the grid and print the comparison table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", default="all")
    ap.add_argument("--policies", default=",".join(POLICIES))
    args = ap.parse_args()
    days = DAYS if args.days == "all" else tuple(args.days.split(","))
    ref = reference()
    print("| day | policy | energy kWh (ref) | d | migrations (ref) | d | SLAV % (ref) | d | ok | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    fails = 0
    for day in days:
        dc = cloudsim_datacenter(load_planetlab(SHARED / "traces" / "planetlab" / day))
        for name in args.policies.split(","):
            t0 = time.perf_counter()
            got = run_policy(Simulation(dc), make_policy(name))
            secs = time.perf_counter() - t0
            r = ref[f"{day}_{name.replace('-', '_')}"]
            e_ref, m_ref, s_ref = float(r["energy_kwh"]), int(r["migrations"]), float(r["slav_pct"])
            de, dm, ds = rel(got["energy_kwh"], e_ref), rel(got["migrations"], m_ref), rel(got["slav_pct"], s_ref)
            ok = abs(de) <= 0.03 if name == "dvfs" else abs(de) <= 0.10 and abs(dm) <= 0.10 and abs(ds) <= 0.25
            fails += not ok
            print(f"| {day} | {name} | {got['energy_kwh']:.2f} ({e_ref:.2f}) | {100 * de:+.1f}% "
                  f"| {got['migrations']} ({m_ref}) | {100 * dm:+.1f}% | {got['slav_pct']:.5f} ({s_ref:.5f}) "
                  f"| {100 * ds:+.1f}% | {'yes' if ok else 'NO'} | {secs:.1f} |", flush=True)
    print(f"\n{fails} row(s) outside the bounds")


if __name__ == "__main__":
    main()
