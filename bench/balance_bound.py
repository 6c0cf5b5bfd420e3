"""How far the balance policies are from the limit (issue 14): the fluid and the whole-VM bounds.

On the held-back fleets of ``bench/balance_rl.py`` (same trace families, split, seeds and fleet
draws) two lower bounds of the balance cost, and the recorded costs beside them:

- the fluid bound: each step, demand above the fleet's total cores (VMs split freely, moved for free);
- the whole-VM bound (:mod:`llmvirt.sim.balance_bound`): each step, the least demand above each host's
  cores over every placement of *whole* VMs, knowing the future and moving for free.

Neither needs a policy, so this script runs none (but "none", whose cost it checks against the
recorded one to prove the fleets are the same). The policies' costs come from
``bench/balance_rl.json``, ``bench/cpsat_balance.json`` (tuned CP-SAT) and
``bench/forecast_value.json`` (the fallback deciding on the next step's true demand: not a policy,
an estimate of what knowing the future brings when moves are priced).

Usage: python bench/balance_bound.py [--fleets 16] [--seeds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from llmvirt.bench.balance_rl import fleets, run_named, trace_families
from llmvirt.sim.balance_bound import fleet_bounds
from llmvirt.sim.balance_env import BalanceEnv, EnvConfig
from llmvirt.sim.split import TRAIN_FRACTION, split
from llmvirt.sim.traces import load_usage

ROOT = Path(__file__).resolve().parents[1]
TRACES = trace_families(ROOT.parent / "shared/traces")
SHOWN = ("none", "watcher-wb:100", "llmvirt-rl-fallback:1.0", "llmvirt-rl")
LOOK_AHEAD = "fallback:1.0, perfect look-ahead"


def _recorded(family: str, seeds: int) -> dict[str, list[float]]:
    """Every shown row's cost per seed, from the committed result files."""
    rl = json.loads((ROOT / "bench/balance_rl.json").read_text())["families"][family]["runs"]
    rows = {name: [rl[str(s)][name]["cost"] for s in range(seeds)] for name in SHOWN}
    cp = json.loads((ROOT / "bench/cpsat_balance.json").read_text())["families"][family]
    pick = cp["tuned"]["strategy"]
    rows[f"tuned {pick}"] = [cp["runs"][str(s)][pick]["cost"] for s in range(seeds)]
    fv = json.loads((ROOT / "bench/forecast_value.json").read_text())["families"][family]["held_back"]
    rows[LOOK_AHEAD + " (not a policy)"] = fv[LOOK_AHEAD][:seeds]
    return rows


def _row(name: str, values: list[float], bound: float) -> str:
    mean = statistics.mean(values)
    return f"| {name} | " + " | ".join(f"{v:.1f}" for v in values) + f" | {mean:.1f} | {mean - bound:.1f} |"


def main() -> None:
    """Both bounds per seed, then each recorded cost against the whole-VM bound."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--fleets", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    cfg = EnvConfig()
    t0 = time.perf_counter()
    for family, path in TRACES.items():
        trace = load_usage(path)
        _, held = split(trace.names, TRAIN_FRACTION)
        fluid, whole, none = [], [], []
        for seed in range(args.seeds):
            fl = fleets(trace, held, args.fleets, seed, cfg)
            none.append(run_named("none", trace, fl, cfg).total("cost"))
            env = BalanceEnv(trace, len(fl), cfg, fleets=fl)
            whole.append(float(fleet_bounds(env, cfg.episode_steps).sum()))
            fluid.append(float(env.metrics.bound_core_h.sum()))
        rows = _recorded(family, args.seeds)
        same = all(abs(a - b) < 1e-6 for a, b in zip(none, rows["none"], strict=True))
        print(f"\n{family}, held-back VMs: core-h per seed ({args.fleets} fleet-days each); "
              f"fleets {'identical to' if same else 'DIFFERENT FROM'} bench/balance_rl.json's\n")
        print("| | " + " | ".join(f"seed {s}" for s in range(args.seeds)) + " | mean | above the whole-VM bound |")
        print("|---" * (args.seeds + 3) + "|")
        b = statistics.mean(whole)
        print(_row("fluid bound", fluid, b))
        print(_row("whole-VM bound", whole, b))
        for name, values in rows.items():
            print(_row(name, values, b))
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
