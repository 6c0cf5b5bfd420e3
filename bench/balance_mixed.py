"""The balance scenario on fleets of mixed host sizes, CPU and memory both binding (issues 14 and 15).

Each fleet's hosts draw their own size (8, 16, 24 or 32 cores) and have 20 GiB of memory per core, so
provisioned memory refuses about a third of the possible moves while CPU demand overloads hosts
(``MIXED`` in llmvirt/bench/fleets.py, which `llmvirt bench --scenario fleets --mixed` runs; the
memory per core was chosen on fleets of *training* VMs, seed 1000: at 16 GiB a core the hosts'
memory is 80-92 % allocated on average, and from 12 GiB down full, so no policy can move anything;
20 GiB, the tightest tried above that, refuses about a third of moves in both months).

Protocol, as bench/balance_rl.py and bench/cpsat_balance.py: every baseline family (Watcher, ProxLB,
Proxmox's CRS, CP-SAT, llmvirt's loop = the learned policy's fallback) is grid-searched on fleets of
the training VMs of each trace family (seeds 1000 and 1001) by the balance cost; each family's pick
then runs on fleets of held-back VMs (seeds 0-4), beside no migration and the shipped learned policy
(``llmvirt-rl``, trained on fleets of identical hosts only: this scenario is new to it). The lower
bound is the fluid one (demand above the fleet's cores, VMs split freely and moved for free).

Usage: python bench/balance_mixed.py [--fleets 8] [--seeds 5]
Writes bench/balance_mixed.json and prints the tables for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date
from pathlib import Path

from llmvirt.bench.balance_rl import (
    BASELINE_GRID,
    CPSAT_GRID,
    PROXMOX_CRS_GRID,
    TUNE_SEEDS,
    fleets,
    run_named,
    trace_families,
    tune,
)
from llmvirt.bench.fleets import MIXED
from llmvirt.sim.split import TRAIN_FRACTION, split
from llmvirt.sim.traces import load_usage

ROOT = Path(__file__).resolve().parents[1]
TRACES = trace_families(ROOT.parent / "shared/traces")
GRID = {**BASELINE_GRID, "proxmox-crs": PROXMOX_CRS_GRID, "cp-sat": CPSAT_GRID}
LEARNED = "llmvirt-rl"


def main() -> None:
    """Tune on training VMs, run on held-back VMs, print."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--fleets", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/balance_mixed.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    out: dict = {"date": date.today().isoformat(), "machine": f"{platform.node()}, {platform.machine()}",
                 "scenario": {"host_cores": MIXED.host_cores, "mem_gib_per_core": MIXED.mem_gib_per_core,
                              "hosts": MIXED.hosts, "load": MIXED.load}, "families": {}}
    for family, path in TRACES.items():
        trace = load_usage(path)
        train_vms, held = split(trace.names, TRAIN_FRACTION)
        print(f"{family}: tuning {len(GRID)} families on {train_vms.size} training VMs", flush=True)
        tuned = tune(trace, train_vms, MIXED, args.fleets, TUNE_SEEDS, GRID)
        names = ("none", *(t["strategy"] for t in tuned.values()), LEARNED)
        runs: dict = {}
        for seed in range(args.seeds):
            fl = fleets(trace, held, args.fleets, seed, MIXED)
            res = {n: run_named(n, trace, fl, MIXED) for n in names}
            runs[seed] = {n: {k: r.total(k) for k in ("cost", "unmet_core_h", "migration_core_h", "migrations",
                                                       "refused", "overload_host_h", "demand_core_h", "bound_core_h")}
                          | {"seconds": r.seconds} for n, r in res.items()}
            print(f"  seed {seed}: " + ", ".join(f"{n} {runs[seed][n]['cost']:.1f}" for n in names), flush=True)
        out["families"][family] = {"tuned": {f: {"strategy": t["strategy"], "cost": t["cost"]}
                                             for f, t in tuned.items()}, "runs": runs}
        _print(family, runs, args.fleets)
    out["wall_s"] = time.perf_counter() - t0
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {args.out} in {out['wall_s']:.0f} s")


def _print(family: str, runs: dict, n_fleets: int) -> None:
    seeds = sorted(runs)
    names = list(runs[seeds[0]])
    bound = [runs[s]["none"]["bound_core_h"] for s in seeds]
    best = min((n for n in names if n not in ("none", LEARNED)),
               key=lambda n: statistics.mean(runs[s][n]["cost"] for s in seeds))
    ref = statistics.mean(runs[s][best]["cost"] for s in seeds)
    print(f"\n{family}, held-back VMs, mixed host sizes: cost per seed (core-h, {n_fleets} fleet-days each); "
          f"best tuned baseline {best}")
    print("| policy | " + " | ".join(f"seed {s}" for s in seeds) + " | min / median / max | unmet % | "
          "migrations/fleet-day | refused | x best tuned |")
    print("|---|" + "---|" * (len(seeds) + 5))
    for n in names:
        c = [runs[s][n]["cost"] for s in seeds]
        unmet = 100 * sum(runs[s][n]["unmet_core_h"] for s in seeds) / sum(runs[s][n]["demand_core_h"] for s in seeds)
        mig = statistics.mean(runs[s][n]["migrations"] for s in seeds) / n_fleets
        ref_n = sum(runs[s][n]["refused"] for s in seeds)
        spread = f"{min(c):.1f} / {statistics.median(c):.1f} / {max(c):.1f}"
        print(f"| {n} | " + " | ".join(f"{x:.1f}" for x in c)
              + f" | {spread} | {unmet:.2f} | {mig:.1f} | {ref_n:.0f} | {statistics.mean(c) / ref:.2f} |")
    print("| fluid lower bound | " + " | ".join(f"{x:.1f}" for x in bound)
          + f" | {min(bound):.1f} / {statistics.median(bound):.1f} / {max(bound):.1f} | | | | |")


if __name__ == "__main__":
    main()
