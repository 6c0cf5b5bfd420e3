"""The learned consolidation head against baselines tuned by the same cost, on the held-back days (issue 14).

Every baseline family was grid-searched on the training days only (``llmvirt tune``, committed in
policies/tuned.json) by the honest cost of :func:`llmvirt.model.score.consolidation_cost`; the head was
learned on the same days. Here all of them run on the four held-back PlanetLab days, which neither
saw. Spread is over days (CloudSim's THR/IQR/MAD/LR-MMT policies and the head are deterministic).

Usage: python bench/tuned_cloudsim.py [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

from llmvirt.bench.tune import run_one
from llmvirt.model.score import COST_WEIGHTS
from llmvirt.sim.split import TRAIN_DAYS
from llmvirt.strategies.tuned import TUNED_FILE

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DEFAULTS = ("thr-mmt-0.8", "lr-mmt-1.2")


def _job(args: tuple[str, str]) -> tuple[str, str, dict[str, float]]:
    return args[0], args[1], run_one(*args)


def main() -> None:
    """Print the per-day table, the spread over days, and the verdict."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    t0 = time.perf_counter()
    tuned = json.loads(TUNED_FILE.read_text())
    families = list(tuned["families"])
    policies = ["llmvirt-head", *(f"tuned:{f}" for f in families), *DEFAULTS]
    days = sorted(p for p in (SHARED / "traces" / "planetlab").iterdir() if p.is_dir() and p.name not in TRAIN_DAYS)
    jobs = [(str(d), p) for d in days for p in policies]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        runs = {(Path(d).name, p): s for d, p, s in pool.map(_job, jobs)}
    print(f"# consolidation on held-back days, against baselines tuned on {', '.join(tuned['train_days'])}; "
          f"{platform.machine()}, {date.today()}\n")
    print(f"Cost weights (kWh-equivalents): {COST_WEIGHTS}. Tuned: "
          + ", ".join(f"{f} = {tuned['families'][f]['best']}" for f in families) + "\n")
    print("| day | policy | cost | energy kWh | unmet core-h | overload host-h | migrations | GiB moved |")
    print("|---|---|---|---|---|---|---|---|")
    for d in days:
        for p in policies:
            s = runs[(d.name, p)]
            name = f"**{p}**" if p == "llmvirt-head" else p
            print(f"| {d.name} | {name} | {s['cost']:.2f} | {s['energy_kwh']:.2f} | {s['unmet_core_h']:.2f} | "
                  f"{s['overload_host_h']:.2f} | {int(s['migrations'])} | {s['gib_migrated']:.0f} |")
    print("\n| policy | cost min | median | max | days it has the lowest cost |\n|---|---|---|---|---|")
    for p in policies:
        costs = [runs[(d.name, p)]["cost"] for d in days]
        wins = sum(1 for d in days if min(policies, key=lambda q, d=d: runs[(d.name, q)]["cost"]) == p)
        print(f"| {p} | {min(costs):.2f} | {statistics.median(costs):.2f} | {max(costs):.2f} | {wins} of {len(days)} |")
    print("\n| day | head cost / best tuned baseline's | best tuned baseline |\n|---|---|---|")
    for d in days:
        best = min((p for p in policies if p.startswith("tuned:")), key=lambda q, d=d: runs[(d.name, q)]["cost"])
        head = runs[(d.name, "llmvirt-head")]["cost"]
        print(f"| {d.name} | {head / runs[(d.name, best)]['cost']:.3f} | {best} |")
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
