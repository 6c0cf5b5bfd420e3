"""How far can a next-step forecast take the best tuned baseline? Tuned CP-SAT that knows the next step (issue 15).

Not a policy: it reads the future. Tuned CP-SAT, at each held-back scenario's tuned point (from its recorded
runs), decides on every VM's demand over the *next* 300 s step instead of the demand now, on the held-back
fleets of bench/balance_shapes.py (July and August; one host size and mixed sizes; 5 seeds). Its cost bounds
what any next-step forecast (learned or not) can bring to the best tuned baseline; "What a forecast is worth to
the balance loop" gave the same bound for llmvirt's own loop. Nothing is chosen from it.

The runner without the look-ahead reproduces CP-SAT's recorded cost on seed 0 of each scenario (asserted).

``--relax-memory`` asks why the mixed fleets gain so little: the same mixed-fleet draws with 50x the memory per
core (memory never binds), CP-SAT at the same point with and without the look-ahead.

Usage: python bench/balance_cpsat_lookahead.py [--family F] [--seeds 5] [--relax-memory]
Writes bench/balance_cpsat_lookahead_<family>[_relaxed].json and prints the table rows for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from balance_shapes import SCENARIOS, recorded_costs  # noqa: E402

from llmvirt.bench.balance_rl import fleets, run_balancer, trace_families  # noqa: E402
from llmvirt.sim.balance_env import BalanceEnv  # noqa: E402
from llmvirt.sim.split import TRAIN_FRACTION, split  # noqa: E402
from llmvirt.sim.traces import load_usage  # noqa: E402
from llmvirt.strategies.registry import make_balancer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRACES = trace_families(ROOT.parent / "shared/traces")


def next_step(env: BalanceEnv) -> np.ndarray:
    """(E, V) every VM's demand over the next step, cores: the perfect look-ahead."""
    env.t += 1
    try:
        return env.demand_now() * env.vm_valid
    finally:
        env.t -= 1


def family(name: str, seeds: int) -> dict[str, Any]:
    """Tuned CP-SAT with the perfect next step on each scenario's held-back fleets of ``name``."""
    trace = load_usage(TRACES[name])
    held = split(trace.names, TRAIN_FRACTION)[1]
    out: dict[str, Any] = {"date": date.today().isoformat(), "scenarios": {}}
    for scenario, (shape, n_fleets, files) in SCENARIOS.items():
        _, best, cpsat = recorded_costs(name, files, seeds)
        draws = [fleets(trace, held, n_fleets, s, shape) for s in range(seeds)]
        again = run_balancer(make_balancer(best), trace, draws[0], shape).total()
        assert abs(again - cpsat[0]) < 1e-6, f"{name} {scenario}: {again} is not the recorded {cpsat[0]}"
        runs = [run_balancer(make_balancer(best), trace, fl, shape, demand=next_step) for fl in draws]
        out["scenarios"][scenario] = {"cp_sat": {"strategy": best, "cost": cpsat},
                                      "look_ahead": [r.total() for r in runs],
                                      "migrations": sum(r.total("migrations") for r in runs)}
        look = out["scenarios"][scenario]["look_ahead"]
        print(f"| {name}, {scenario} ({best}) | {statistics.mean(cpsat):.1f} | {statistics.mean(look):.1f} ± "
              f"{statistics.stdev(look):.1f} | {statistics.mean(look) / statistics.mean(cpsat):.3f} |", flush=True)
    return out


def relaxed(name: str, seeds: int) -> dict[str, Any]:
    """Mixed fleets of ``name`` whose memory never binds: CP-SAT with and without the perfect next step."""
    trace = load_usage(TRACES[name])
    held = split(trace.names, TRAIN_FRACTION)[1]
    shape, n_fleets, files = SCENARIOS["mixed"]
    best = recorded_costs(name, files, 1)[1]
    loose = replace(shape, mem_gib_per_core=50 * shape.mem_gib_per_core)
    draws = [fleets(trace, held, n_fleets, s, loose) for s in range(seeds)]
    now = [run_balancer(make_balancer(best), trace, fl, loose).total() for fl in draws]
    look = [run_balancer(make_balancer(best), trace, fl, loose, demand=next_step).total() for fl in draws]
    print(f"| {name}, mixed, memory never binding ({best}) | {statistics.mean(now):.1f} | {statistics.mean(look):.1f} "
          f"± {statistics.stdev(look):.1f} | {statistics.mean(look) / statistics.mean(now):.3f} |", flush=True)
    return {"date": date.today().isoformat(), "mem_gib_per_core": loose.mem_gib_per_core, "cp_sat": best,
            "now": now, "look_ahead": look}


def main() -> None:
    """One family or both; the rows and the JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", choices=tuple(TRACES))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--relax-memory", action="store_true", help="mixed fleets whose memory never binds")
    args = ap.parse_args()
    ref = "CP-SAT on the same fleets" if args.relax_memory else "tuned CP-SAT (recorded)"
    print(f"| held-back fleets | {ref} | CP-SAT knowing the next step: mean ± sd | x {ref} |")
    print("|---|---|---|---|")
    for name in [args.family] if args.family else list(TRACES):
        t0 = time.perf_counter()
        doc = relaxed(name, args.seeds) if args.relax_memory else family(name, args.seeds)
        doc["wall_s"] = time.perf_counter() - t0
        suffix = "_relaxed" if args.relax_memory else ""
        (ROOT / f"bench/balance_cpsat_lookahead_{name}{suffix}.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
