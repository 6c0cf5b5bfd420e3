"""The learned balance policy against tuned baselines on held-back VMs, with ablations and seeds (issue 15).

1. Every baseline family (Watcher workload_balance's threshold, ProxLB's balanciness and resource,
   the learned policy's heuristic fallback's trigger) is grid-searched on fleets of the *training*
   VMs of each trace family, by the same balance cost the policy was trained on.
2. On fleets of the *held-back* VMs (``sha256(name) >= 0.6``; no policy or tuning saw them), five
   seeds per family, every policy runs on identical fleets: none, the tuned baselines, the learned
   policy, and its ablations: (a) the network replaced by its fallback in the same loop (the prior
   alone), (b) the forecast replaced by the last value, (c) no history features; b' and c' take the
   input away from the shipped weights at decision time, b and c (``--ablation``) are retrained so.
3. The sim-to-production gap: the same held-back fleets with migrations 10x slower (1 Gbit/s).

Usage: python bench/balance_rl.py [--policy policies/default] [--ablations DIR ...] [--fleets 16] [--seeds 5]
Writes bench/balance_rl.json and prints the tables for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

from llmvirt.bench.balance_rl import TUNE_SEEDS, fleets, run_actor, run_named, trace_families, tune
from llmvirt.policy import balance_policy
from llmvirt.sim.balance_env import EnvConfig
from llmvirt.sim.split import TRAIN_FRACTION, split
from llmvirt.sim.traces import load_usage

ROOT = Path(__file__).resolve().parents[1]
TRACES = trace_families(ROOT.parent / "shared/traces")
EVAL_SEED0 = 0  # held-back fleets: seeds 0 .. --seeds - 1


def main() -> None:
    """Tune, evaluate, print."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", type=Path, default=ROOT / "policies/default")
    ap.add_argument("--ablation", action="append", default=[], help="NAME=DIR of a retrained ablation")
    ap.add_argument("--fleets", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/balance_rl.json")
    ap.add_argument("--only-ablations", action="store_true",
                    help="only the --ablation policies and the shipped one, on the same held-back fleets (no tuning)")
    args = ap.parse_args()
    if args.only_ablations:
        _ablations_only(args)
        return
    t0 = time.perf_counter()
    cfg = EnvConfig()
    actor = balance_policy.load(args.policy, name="llmvirt-rl")
    ablations = {"llmvirt-rl": actor,
                 # (a) the network replaced by its fallback: the prior alone, at the policy's own trigger
                 "(a) fallback": balance_policy.BalanceActor(name="(a) fallback", fallback=True,
                                                             threshold=actor.threshold),
                 # the same weights with an input taken away at decision time (not retrained)
                 "(b') forecast = last value": balance_policy.BalanceActor(
                     actor.arrays, {**actor.meta, "mode": "no-forecast"}, name="(b') forecast = last value"),
                 "(c') no history": balance_policy.BalanceActor(
                     actor.arrays, {**actor.meta, "mode": "no-history"}, name="(c') no history")}
    for item in args.ablation:
        label, path = item.split("=", 1)
        ablations[label] = balance_policy.load(Path(path), name=label)
    out: dict = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {platform.processor() or '?'}",
                 "cost": "balance cost, core-hours: unmet CPU demand + migration copy CPU + 0.05 per migration",
                 "fleets_per_seed": args.fleets, "seeds": args.seeds, "families": {}}
    for family, path in TRACES.items():
        trace = load_usage(path)
        train_vms, held = split(trace.names, TRAIN_FRACTION)
        print(f"{family}: {len(trace.names)} VMs, {train_vms.size} train, {held.size} held back; tuning on train VMs")
        tuned = tune(trace, train_vms, cfg, args.fleets, TUNE_SEEDS)
        names = ["none", *(t["strategy"] for t in tuned.values())]
        fam: dict = {"tuned": tuned, "runs": {}, "gap": {}}
        for label, conf in (("runs", cfg), ("gap", replace(cfg, migration_gbit_s=1.0))):
            for seed in range(EVAL_SEED0, EVAL_SEED0 + args.seeds):
                fl = fleets(trace, held, args.fleets, seed, conf)
                res = {n: run_named(n, trace, fl, conf) for n in names}
                res.update({k: run_actor(a, trace, fl, conf) for k, a in ablations.items()})
                fam[label][seed] = {k: {"cost": r.total(), "unmet_core_h": r.total("unmet_core_h"),
                                        "migrations": r.total("migrations"), "gib_migrated": r.total("gib_migrated"),
                                        "overload_host_h": r.total("overload_host_h"),
                                        "demand_core_h": r.total("demand_core_h"), "refused": r.total("refused"),
                                        "seconds": r.seconds} for k, r in res.items()}
                if label == "gap" and seed >= EVAL_SEED0 + 1:
                    break  # the gap experiment: two seeds
        out["families"][family] = fam
        _print(family, fam, tuned, args.fleets)
    out["wall_s"] = time.perf_counter() - t0
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {args.out} in {out['wall_s']:.0f} s")


def _ablations_only(args: argparse.Namespace) -> None:
    """The retrained ablations beside the shipped policy and its fallback, on the held-back fleets of the
    main run's seeds (same draws: same seeds, same configuration)."""
    cfg = EnvConfig()
    actor = balance_policy.load(args.policy, name="llmvirt-rl")
    fallback = balance_policy.BalanceActor(name="(a) fallback", fallback=True, threshold=actor.threshold)
    actors = {"llmvirt-rl": actor, "(a) fallback": fallback}
    for item in args.ablation:
        label, path = item.split("=", 1)
        actors[label] = balance_policy.load(Path(path), name=label)
    for family, path in TRACES.items():
        trace = load_usage(path)
        held = split(trace.names, TRAIN_FRACTION)[1]
        costs = {k: [] for k in actors}
        for seed in range(EVAL_SEED0, EVAL_SEED0 + args.seeds):
            fl = fleets(trace, held, args.fleets, seed, cfg)
            for k, a in actors.items():
                costs[k].append(run_actor(a, trace, fl, cfg).total())
        print(f"\n{family}, held-back VMs: cost per seed (core-h), mean ± sd")
        print("| policy | " + " | ".join(f"seed {s}" for s in range(args.seeds)) + " | mean ± sd |")
        print("|---|" + "---|" * (args.seeds + 1))
        for k, c in costs.items():
            print(f"| {k} | " + " | ".join(f"{x:.1f}" for x in c)
                  + f" | {statistics.mean(c):.1f} ± {statistics.stdev(c):.1f} |")


def _row(runs: dict, seeds: list[int], name: str, base: float, n_fleets: int) -> str:
    c = [runs[s][name]["cost"] for s in seeds]
    sd = statistics.stdev(c) if len(c) > 1 else 0.0
    demand = sum(runs[s][name]["demand_core_h"] for s in seeds)
    unmet = 100 * sum(runs[s][name]["unmet_core_h"] for s in seeds) / demand
    mig = statistics.mean(runs[s][name]["migrations"] for s in seeds) / n_fleets
    mean = statistics.mean(c)
    per_seed = " | ".join(f"{x:.1f}" for x in c)
    return f"| {name} | {per_seed} | {mean:.1f} ± {sd:.1f} | {unmet:.2f} | {mig:.1f} | {mean / base:.2f} |"


def _print(family: str, fam: dict, tuned: dict, n_fleets: int) -> None:
    for label, title in (("runs", "held-back VMs, 10 Gbit/s"), ("gap", "production: migrations 10x slower")):
        runs = fam[label]
        seeds = sorted(runs)
        names = list(runs[seeds[0]])
        field = [t["strategy"] for t in tuned.values() if not t["strategy"].startswith("llmvirt")]
        best_base = min(field, key=lambda n: statistics.mean(runs[s][n]["cost"] for s in seeds))
        base = statistics.mean(runs[s][best_base]["cost"] for s in seeds)
        print(f"\n{family}, {title}: cost per seed (core-h, {n_fleets} fleet-days), mean ± sd over seeds, "
              f"against the best tuned field baseline ({best_base})")
        print("| policy | " + " | ".join(f"seed {s}" for s in seeds)
              + " | mean ± sd | unmet % | migrations/fleet-day | x best |")
        print("|---|" + "---|" * (len(seeds) + 4))
        for n in names:
            print(_row(runs, seeds, n, base, n_fleets))


if __name__ == "__main__":
    main()
