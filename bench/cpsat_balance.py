"""The optimising baseline (``cp-sat``) in the balance scenario, tuned like the others, on held-back VMs (issue 14).

Same protocol as bench/balance_rl.py: the CP-SAT balancer's parameters (moves per decision K, price per
move P; trigger 1.0, the trigger every tuned loop chose) are grid-searched on fleets of the *training*
VMs of each trace family (seeds 1000 and 1001, 16 fleets each), by the balance cost; the chosen point
then runs once on the held-back fleets (seeds 0-4, 16 fleets each), beside the best tuned field
baseline (Watcher at 100 %) and llmvirt's loop (the learned policy's fallback at 1.0), re-run here on
the same fleets.

Usage: python bench/cpsat_balance.py [--fleets 16] [--seeds 5]
Writes bench/cpsat_balance.json and prints the tables for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date
from pathlib import Path

from llmvirt.bench.balance_rl import CPSAT_GRID, TUNE_SEEDS, fleets, run_named, trace_families, tune
from llmvirt.sim.balance_env import EnvConfig
from llmvirt.sim.split import TRAIN_FRACTION, split
from llmvirt.sim.traces import load_usage

ROOT = Path(__file__).resolve().parents[1]
TRACES = trace_families(ROOT.parent / "shared/traces")
GRID = {"cp-sat": CPSAT_GRID}
COMPARE = ("watcher-wb:100", "llmvirt-rl-fallback:1.0")


def main() -> None:
    """Tune on training VMs, run on held-back VMs, print."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--fleets", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/cpsat_balance.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    cfg = EnvConfig()
    out: dict = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {platform.processor() or '?'}",
                 "grid": GRID["cp-sat"], "families": {}}
    for family, path in TRACES.items():
        trace = load_usage(path)
        train_vms, held = split(trace.names, TRAIN_FRACTION)
        print(f"{family}: tuning cp-sat on {train_vms.size} training VMs")
        tuned = tune(trace, train_vms, cfg, args.fleets, TUNE_SEEDS, GRID)["cp-sat"]
        names = (tuned["strategy"], *COMPARE)
        runs: dict = {}
        for seed in range(args.seeds):
            fl = fleets(trace, held, args.fleets, seed, cfg)
            res = {n: run_named(n, trace, fl, cfg) for n in names}
            runs[seed] = {n: {"cost": r.total(), "unmet_core_h": r.total("unmet_core_h"),
                              "migrations": r.total("migrations"), "seconds": r.seconds} for n, r in res.items()}
        out["families"][family] = {"tuned": tuned, "runs": runs}
        _print(family, tuned, runs, args.fleets)
    out["wall_s"] = time.perf_counter() - t0
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {args.out} in {out['wall_s']:.0f} s")


def _print(family: str, tuned: dict, runs: dict, n_fleets: int) -> None:
    seeds = sorted(runs)
    names = list(runs[seeds[0]])
    base = statistics.mean(runs[s]["watcher-wb:100"]["cost"] for s in seeds)
    print(f"\n{family}, held-back VMs: cost per seed (core-h, {n_fleets} fleet-days), against tuned Watcher")
    print("| policy | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± sd | migrations/fleet-day | "
          "s per fleet-day | x Watcher |")
    print("|---|" + "---|" * (len(seeds) + 4))
    for n in names:
        c = [runs[s][n]["cost"] for s in seeds]
        mig = statistics.mean(runs[s][n]["migrations"] for s in seeds) / n_fleets
        sec = statistics.mean(runs[s][n]["seconds"] for s in seeds) / n_fleets
        print(f"| {n} | " + " | ".join(f"{x:.1f}" for x in c)
              + f" | {statistics.mean(c):.1f} ± {statistics.stdev(c):.1f} | {mig:.1f} | {sec:.2f} | "
                f"{statistics.mean(c) / base:.2f} |")


if __name__ == "__main__":
    main()
