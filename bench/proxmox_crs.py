"""Proxmox VE's CRS: its own 29 test cases through llmvirt, and the CRS as a tuned baseline (issue 14).

1. Conformance: every case in ``../shared/peers/pve-ha-manager-crs`` replayed with
   ``baseline:proxmox-crs`` (must make exactly Proxmox's decisions) and with llmvirt's default
   policy (same decisions, different with an equal or lower imbalance, or different and why).
2. The CRS as a balancer in the balance scenario, side by side in one run with the other tuned
   baselines and the learned balance policy: every family grid-searched on fleets of the training
   VMs by the balance cost, then all run on identical fleets of held-back VMs, five seeds.

Usage: python bench/proxmox_crs.py [--fleets 16] [--seeds 5] [--conformance-only]
Writes bench/proxmox_crs.json and prints the tables for RESULTS.md.
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
    PROXMOX_CRS_GRID,
    TUNE_SEEDS,
    fleets,
    run_actor,
    run_named,
    trace_families,
    tune,
)
from llmvirt.peers import conformance
from llmvirt.peers.llmvirt_scheduler import LlmvirtScheduler
from llmvirt.policy import balance_policy
from llmvirt.sim.balance_env import EnvConfig
from llmvirt.sim.split import TRAIN_FRACTION, split
from llmvirt.sim.traces import load_usage

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT.parent / "shared/peers/pve-ha-manager-crs"
TRACES = trace_families(ROOT.parent / "shared/traces")


def main() -> None:
    """Conformance, then tuning and held-back evaluation; print and write JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--fleets", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--conformance-only", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/proxmox_crs.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    out: dict = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {platform.processor() or '?'}"}
    results = [conformance.run_case(d, LlmvirtScheduler()) for d in conformance.case_dirs([CASES])]
    out["conformance"] = [r.as_json() for r in results]
    print(conformance.table(results))
    matched = sum(r.baseline_matches for r in results)
    print(f"\nbaseline:proxmox-crs: {matched} of {len(results)} cases; llmvirt default: "
          + ", ".join(f"{sum(r.status == s for r in results)} {s}" for s in ("match", "equal-or-better", "differs")))
    if not args.conformance_only:
        out["balance"] = _balance(args)
    out["wall_s"] = time.perf_counter() - t0
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {args.out} in {out['wall_s']:.0f} s")


def _balance(args: argparse.Namespace) -> dict:
    cfg = EnvConfig()
    actor = balance_policy.load(ROOT / "policies/default", name="llmvirt-rl")
    grids = {**BASELINE_GRID, "proxmox-crs": PROXMOX_CRS_GRID}
    out: dict = {"cost": "balance cost, core-hours: unmet CPU demand + migration copy CPU + 0.05 per migration",
                 "fleets_per_seed": args.fleets, "seeds": args.seeds, "families": {}}
    for family, path in TRACES.items():
        trace = load_usage(path)
        train_vms, held = split(trace.names, TRAIN_FRACTION)
        print(f"\n{family}: tuning on {train_vms.size} training VMs, evaluating on {held.size} held-back VMs")
        tuned = tune(trace, train_vms, cfg, args.fleets, TUNE_SEEDS, grids=grids)
        names = ["none", *(t["strategy"] for t in tuned.values()), "proxmox-crs"]
        runs: dict = {}
        for seed in range(args.seeds):
            fl = fleets(trace, held, args.fleets, seed, cfg)
            res = {n: run_named(n, trace, fl, cfg) for n in dict.fromkeys(names)}
            res["llmvirt-rl"] = run_actor(actor, trace, fl, cfg)
            runs[seed] = {k: {"cost": r.total(), "unmet_core_h": r.total("unmet_core_h"),
                              "demand_core_h": r.total("demand_core_h"), "migrations": r.total("migrations")}
                          for k, r in res.items()}
        out["families"][family] = {"tuned": tuned, "runs": runs}
        _print(family, runs, tuned, args.fleets)
    return out


def _print(family: str, runs: dict, tuned: dict, n_fleets: int) -> None:
    seeds = sorted(runs)
    names = list(runs[seeds[0]])
    crs = tuned["proxmox-crs"]["strategy"]
    base = statistics.mean(runs[s][crs]["cost"] for s in seeds)
    print(f"\n{family}, held-back VMs: cost per seed (core-h, {n_fleets} fleet-days), against tuned {crs}")
    print("| policy | " + " | ".join(f"seed {s}" for s in seeds)
          + " | mean ± sd | unmet % | migrations/fleet-day | x CRS |")
    print("|---|" + "---|" * (len(seeds) + 4))
    for n in names:
        c = [runs[s][n]["cost"] for s in seeds]
        unmet = 100 * sum(runs[s][n]["unmet_core_h"] for s in seeds) / sum(runs[s][n]["demand_core_h"] for s in seeds)
        mig = statistics.mean(runs[s][n]["migrations"] for s in seeds) / n_fleets
        sd = statistics.stdev(c) if len(c) > 1 else 0.0
        print(f"| {n} | " + " | ".join(f"{x:.1f}" for x in c)
              + f" | {statistics.mean(c):.1f} ± {sd:.1f} | {unmet:.2f} | {mig:.1f} | {statistics.mean(c) / base:.2f} |")


if __name__ == "__main__":
    main()
