"""The balance policy trained across fleet shapes against the one trained on one shape (issue 15).

The policy shipped before was trained on fleets of one host size each; `llmvirt train --head balance-rl
--shapes identical,mixed` trains on those and on fleets of mixed host sizes with memory binding (the
scenario of bench/balance_mixed.py). Both run here on the held-back fleets of both scenarios (the same
draws as bench/balance_rl.json and bench/balance_mixed.json: the script checks that the policy before
reproduces their recorded costs to 1e-6), with the new policy's ablations (a) its fallback alone at its
trigger, (b') the forecast replaced by the last value, (c') no history, and the sim-to-production gap
(migrations 10x slower, two seeds). Tuned CP-SAT, the best tuned baseline, is read from the committed
runs on the same fleets (bench/cpsat_balance.json, bench/balance_mixed.json).

Usage: python bench/balance_shapes.py [--policy policies/default] [--before acf068a] [--seeds 5]
(``--before``: a git commit whose policies/default holds the policy trained on one shape.)
Writes bench/balance_shapes.json and prints the tables for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import tempfile
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

from llmvirt.bench.balance_rl import fleets, run_actor, trace_families
from llmvirt.policy import balance_policy
from llmvirt.sim.balance_env import EnvConfig
from llmvirt.sim.fleet_shapes import MIXED
from llmvirt.sim.split import TRAIN_FRACTION, split
from llmvirt.sim.traces import load_usage

ROOT = Path(__file__).resolve().parents[1]
TRACES = trace_families(ROOT.parent / "shared/traces")
#: scenario -> (fleet shape, fleet-days a seed, the committed runs holding the policy before and tuned CP-SAT)
SCENARIOS = {"identical": (EnvConfig(), 16, ("balance_rl.json", "cpsat_balance.json")),
             "mixed": (MIXED, 8, ("balance_mixed.json", "balance_mixed.json"))}


def _checkout(ref: str, where: Path) -> Path:
    """The learned balance policy's files of ``policies/default`` at git ``ref``, into ``where``."""
    for name in ("balance_rl.safetensors", "balance_rl.json"):
        blob = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:policies/default/{name}"], check=True,
                              capture_output=True).stdout
        (where / name).write_bytes(blob)
    return where


def _actors(policy: Path, before: Path) -> dict[str, balance_policy.BalanceActor]:
    new = balance_policy.load(policy, name="across shapes")
    return {"one shape (before)": balance_policy.load(before, name="one shape (before)"), "across shapes": new,
            "(a) fallback": balance_policy.BalanceActor(name="(a) fallback", fallback=True, threshold=new.threshold),
            "(b') forecast = last value": balance_policy.BalanceActor(
                new.arrays, {**new.meta, "mode": "no-forecast"}, name="(b') forecast = last value"),
            "(c') no history": balance_policy.BalanceActor(
                new.arrays, {**new.meta, "mode": "no-history"}, name="(c') no history")}


def recorded_costs(family: str, files: tuple[str, str], seeds: int) -> tuple[list[float], str, list[float]]:
    """(the policy before's recorded costs, tuned CP-SAT's strategy, its recorded costs) per seed."""
    learned = json.loads((ROOT / "bench" / files[0]).read_text())["families"][family]["runs"]
    cpsat = json.loads((ROOT / "bench" / files[1]).read_text())["families"][family]
    tuned = cpsat["tuned"]
    best = (tuned["cp-sat"] if "cp-sat" in tuned else tuned)["strategy"]  # a CP-SAT-only file, or every family
    return ([learned[str(s)]["llmvirt-rl"]["cost"] for s in range(seeds)], best,
            [cpsat["runs"][str(s)][best]["cost"] for s in range(seeds)])


def _scenario(trace, held, family: str, scenario: str, actors: dict, seeds: int) -> dict:  # noqa: ANN001
    shape, n_fleets, files = SCENARIOS[scenario]
    before, best, cpsat = recorded_costs(family, files, seeds)
    costs: dict[str, list[float]] = {k: [] for k in actors}
    moves: dict[str, float] = dict.fromkeys(actors, 0.0)
    for seed in range(seeds):
        fl = fleets(trace, held, n_fleets, seed, shape)
        for k, a in actors.items():
            r = run_actor(a, trace, fl, shape)
            costs[k].append(r.total())
            moves[k] += r.total("migrations")
    drift = max(abs(a - b) for a, b in zip(costs["one shape (before)"], before, strict=True))
    assert drift < 1e-6, f"{family} {scenario}: the policy before does not reproduce its recorded costs ({drift})"
    gap = {}
    if scenario == "identical":  # the sim-to-production gap: migrations 10x slower, two seeds
        slow = replace(shape, migration_gbit_s=1.0)
        for k in ("one shape (before)", "across shapes"):
            gap[k] = [run_actor(actors[k], trace, fleets(trace, held, n_fleets, s, slow), slow).total()
                      for s in range(2)]
    return {"fleets_per_seed": n_fleets, "cp_sat": {"strategy": best, "cost": cpsat}, "cost": costs,
            "migrations": moves, "gap_1gbit": gap}


def _print(family: str, scenario: str, res: dict) -> None:
    ref = statistics.mean(res["cp_sat"]["cost"])
    rows = {f"tuned {res['cp_sat']['strategy']} (recorded)": res["cp_sat"]["cost"], **res["cost"]}
    print(f"\n{family}, held-back VMs, {scenario} hosts ({res['fleets_per_seed']} fleet-days a seed): cost, core-h")
    print("| policy | mean ± sd (min-max) | x tuned CP-SAT | migrations |")
    print("|---|---|---|---|")
    for k, c in rows.items():
        mig = f"{res['migrations'][k]:.0f}" if k in res["migrations"] else "-"
        print(f"| {k} | {statistics.mean(c):.1f} ± {statistics.stdev(c):.1f} ({min(c):.1f}-{max(c):.1f}) "
              f"| {statistics.mean(c) / ref:.3f} | {mig} |")
    for k, c in res["gap_1gbit"].items():
        print(f"| {k}, migrations 10x slower (seeds 0-1) | {statistics.mean(c):.1f} | | |")


def main() -> None:
    """Run both policies and the ablations on both scenarios' held-back fleets; print and write the JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", type=Path, default=ROOT / "policies/default")
    ap.add_argument("--before", default="acf068a", help="git commit holding the policy trained on one shape")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/balance_shapes.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    out: dict = {"date": date.today().isoformat(), "machine": f"{platform.node()}, {platform.machine()}",
                 "before": args.before, "seeds": args.seeds, "families": {}}
    with tempfile.TemporaryDirectory() as tmp:
        actors = _actors(args.policy, _checkout(args.before, Path(tmp)))
        for family, path in TRACES.items():
            trace = load_usage(path)
            held = split(trace.names, TRAIN_FRACTION)[1]
            out["families"][family] = {}
            for scenario in SCENARIOS:
                res = _scenario(trace, held, family, scenario, actors, args.seeds)
                out["families"][family][scenario] = res
                _print(family, scenario, res)
    out["wall_s"] = time.perf_counter() - t0
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {args.out} in {out['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
