"""How far the balance policies are from the limit (issue 14): the fluid lower bound of the balance cost.

On the held-back fleets of ``bench/balance_rl.py`` (same trace families, split, seeds and fleet
draws), the bound is what no policy can beat: each step, demand above the fleet's total cores is
unmet even if VMs could be split freely over every host and moved for free. It needs no policy, so
this script runs none and sets the bound beside the costs ``bench/balance_rl.json`` recorded.

Usage: python bench/balance_bound.py [--fleets 16] [--seeds 5] [--results bench/balance_rl.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from llmvirt.bench.balance_rl import fleets, run_named, trace_families
from llmvirt.learn.train import split
from llmvirt.learn.train_balance import TRAIN_FRACTION, load_trace
from llmvirt.sim.balance_env import EnvConfig

ROOT = Path(__file__).resolve().parents[1]
TRACES = trace_families(ROOT.parent / "shared/traces")
SHOWN = ("none", "watcher-wb:100", "llmvirt-rl-fallback:1.0", "llmvirt-rl")


def main() -> None:
    """Bound per seed, then each shown policy's recorded cost against it."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--fleets", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--results", type=Path, default=ROOT / "bench/balance_rl.json")
    args = ap.parse_args()
    recorded = json.loads(args.results.read_text())["families"]
    cfg = EnvConfig()
    for family, path in TRACES.items():
        trace = load_trace(path)
        _, held = split(trace.names, TRAIN_FRACTION)
        bound, checked = {}, {}
        for seed in range(args.seeds):
            res = run_named("none", trace, fleets(trace, held, args.fleets, seed, cfg), cfg)
            bound[seed], checked[seed] = res.total("bound_core_h"), res.total("cost")
        runs = recorded[family]["runs"]
        same = all(abs(checked[s] - runs[str(s)]["none"]["cost"]) < 1e-6 for s in bound)
        print(f"\n{family}, held-back VMs: the fluid bound per seed (core-h, {args.fleets} fleet-days); "
              f"fleets {'identical to' if same else 'DIFFERENT FROM'} {args.results.name}'s\n")
        print("| policy | " + " | ".join(f"seed {s}" for s in bound) + " | mean | above the bound |")
        print("|---" * (len(bound) + 3) + "|")
        mean_b = statistics.mean(bound.values())
        print("| fluid bound | " + " | ".join(f"{b:.1f}" for b in bound.values()) + f" | {mean_b:.1f} | 0 |")
        for name in SHOWN:
            costs = [runs[str(s)][name]["cost"] for s in bound]
            mean_c = statistics.mean(costs)
            print(f"| {name} | " + " | ".join(f"{c:.1f}" for c in costs) + f" | {mean_c:.1f} | {mean_c - mean_b:.1f} |")


if __name__ == "__main__":
    main()
