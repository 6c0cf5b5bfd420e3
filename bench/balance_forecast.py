"""The balance loop on a learned next-step forecast, against tuned CP-SAT, on held-back fleets (issue 15).

Each training seed's ``llmvirt-forecast`` (policies/balance-forecast/seedN, written by
``llmvirt train --head balance-forecast``) runs once on the held-back fleets of bench/balance_shapes.py
(the same draws: July and August, one host size and mixed sizes, 5 seeds), beside its ablations:

- (a) the network replaced by its fallback: gain 0 at the same trigger (the forecast replaced by the last
  value is the same loop: a change of 0);
- (c) no history: the forecaster sees the past hour as flat at now (only now and vCPUs).

Tuned CP-SAT (the best tuned baseline) and the learned PPO policy (llmvirt-rl) are read from the committed
runs on the same fleets (bench/cpsat_balance.json, bench/balance_mixed.json, bench/balance_shapes.json). The
sim-to-production gap: migrations 10x slower (1 Gbit/s), one host size, seeds 0-1, beside the fallback.

Usage: python bench/balance_forecast.py [--policies policies/balance-forecast] [--seeds 5]
Writes bench/balance_forecast.json and prints the tables for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from balance_shapes import SCENARIOS, recorded_costs  # noqa: E402

from llmvirt.bench.balance_rl import fleets, run_actor, trace_families  # noqa: E402
from llmvirt.policy import balance_forecast as bfc  # noqa: E402
from llmvirt.sim.split import TRAIN_FRACTION, split  # noqa: E402
from llmvirt.sim.traces import load_usage  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRACES = trace_families(ROOT.parent / "shared/traces")


def actors(policies: Path) -> dict[str, Any]:
    """Every training seed's loop and its ablations, by display name."""
    out: dict[str, Any] = {}
    for d in sorted(p for p in policies.iterdir() if (p / f"{bfc.STEM}.json").is_file()):
        loop = bfc.load(d, name=f"llmvirt-forecast {d.name}")
        out[loop.name] = loop
        fb = f"(a) fallback at trigger {loop.threshold}"
        out.setdefault(fb, bfc.ForecastLoop(None, loop.threshold, 0.0, name=fb))
        out[f"(c) {d.name} no history"] = replace(loop, no_history=True, name=f"(c) {d.name} no history")
    return out


def scenario(trace: Any, held: Any, family: str, name: str, loops: dict[str, Any], seeds: int) -> dict[str, Any]:
    """Every loop on one scenario's held-back fleets, with the recorded CP-SAT and llmvirt-rl costs."""
    shape, n_fleets, files = SCENARIOS[name]
    _, best, cpsat = recorded_costs(family, files, seeds)
    rl = json.loads((ROOT / "bench/balance_shapes.json").read_text())["families"][family][name]["cost"]["across shapes"]
    costs: dict[str, list[float]] = {k: [] for k in loops}
    moves = dict.fromkeys(loops, 0.0)
    for seed in range(seeds):
        fl = fleets(trace, held, n_fleets, seed, shape)
        for k, loop in loops.items():
            r = run_actor(loop, trace, fl, shape)
            costs[k].append(r.total())
            moves[k] += r.total("migrations")
    gap = {}
    if name == "identical":
        slow = replace(shape, migration_gbit_s=1.0)
        for k in [k for k in loops if not k.startswith("(c)")]:
            gap[k] = [run_actor(loops[k], trace, fleets(trace, held, n_fleets, s, slow), slow).total()
                      for s in range(2)]
    return {"fleets_per_seed": n_fleets, "cp_sat": {"strategy": best, "cost": cpsat}, "llmvirt_rl": rl[:seeds],
            "cost": costs, "migrations": moves, "gap_1gbit": gap}


def show(family: str, name: str, res: dict[str, Any]) -> None:
    """One scenario's table."""
    ref = statistics.mean(res["cp_sat"]["cost"])
    rows = {f"tuned {res['cp_sat']['strategy']} (recorded)": res["cp_sat"]["cost"],
            "llmvirt-rl (recorded)": res["llmvirt_rl"], **res["cost"]}
    print(f"\n{family}, held-back VMs, {name} hosts ({res['fleets_per_seed']} fleet-days a seed): cost, core-h")
    print("| policy | mean ± sd (min-max) | x tuned CP-SAT | seeds below CP-SAT | migrations |")
    print("|---|---|---|---|---|")
    for k, c in rows.items():
        mig = f"{res['migrations'][k]:.0f}" if k in res["migrations"] else "-"
        below = sum(a < b for a, b in zip(c, res["cp_sat"]["cost"], strict=True))
        print(f"| {k} | {statistics.mean(c):.1f} ± {statistics.stdev(c):.1f} ({min(c):.1f}-{max(c):.1f}) "
              f"| {statistics.mean(c) / ref:.3f} | {below} of {len(c)} | {mig} |")
    for k, c in res["gap_1gbit"].items():
        print(f"| {k}, migrations 10x slower (seeds 0-1) | {statistics.mean(c):.1f} | | | |")


def main() -> None:
    """Every loop on both families' held-back fleets of both shapes; the tables and the JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--policies", type=Path, default=ROOT / "policies/balance-forecast")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/balance_forecast.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    loops = actors(args.policies)
    doc: dict[str, Any] = {"date": date.today().isoformat(), "machine": f"{platform.node()}, {platform.machine()}",
                           "seeds": args.seeds, "families": {},
                           "loops": {k: {"threshold": v.threshold, "gain": v.gain, "horizon": v.horizon}
                                     for k, v in loops.items()}}
    for family, path in TRACES.items():
        trace = load_usage(path)
        held = split(trace.names, TRAIN_FRACTION)[1]
        doc["families"][family] = {}
        for name in SCENARIOS:
            res = doc["families"][family][name] = scenario(trace, held, family, name, loops, args.seeds)
            show(family, name, res)
    doc["wall_s"] = time.perf_counter() - t0
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"\nwrote {args.out} in {doc['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
