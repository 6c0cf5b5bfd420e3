"""Tuned CP-SAT deciding on the learned next-step forecast instead of the demand now (issue 15).

The best tuned balance baseline is CP-SAT (the exact one-step optimiser); "What a forecast is worth" found the
headroom in knowing the next step, not in search. Here CP-SAT at each scenario's tuned point (read from the
committed runs: bench/cpsat_balance.json, bench/balance_mixed.json) decides on each VM's demand now + gain x
the forecast change of a committed forecaster (policies/balance-forecast/seedN). The gain of each forecaster
is chosen from :data:`GAINS` on 16 fleet-days of training VMs (seed 1000, one host size) of both families
(summed); then it runs once on the held-back fleets of bench/balance_shapes.py. Gain 0 is tuned CP-SAT itself:
the script checks that its runner reproduces the recorded CP-SAT cost of held-back seed 0 (one size).

Usage: python bench/balance_forecast_cpsat.py --stage tune|held [--family F] [--seeds 5]
(``tune`` writes bench/balance_forecast_cpsat_tune_FAMILY.json; ``held`` chooses each gain from both and writes
bench/balance_forecast_cpsat_FAMILY.json; run the families in two processes to use both cores.)
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from balance_shapes import SCENARIOS, recorded_costs  # noqa: E402

from llmvirt.bench.balance_rl import TUNE_SEEDS, EvalResult, fleets, run_balancer, trace_families  # noqa: E402
from llmvirt.policy import balance_forecast as bfc  # noqa: E402
from llmvirt.sim.balance_env import EnvConfig, Fleet  # noqa: E402
from llmvirt.sim.split import TRAIN_FRACTION, split  # noqa: E402
from llmvirt.sim.traces import UsageTrace, load_usage  # noqa: E402
from llmvirt.strategies.registry import make_balancer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRACES = trace_families(ROOT.parent / "shared/traces")
GAINS = (0.5, 1.0, 1.5)  #: the forecast's weight, chosen per forecaster on training VMs
POLICIES = ROOT / "policies/balance-forecast"


def run_on_forecast(balancer: Any, loop: bfc.ForecastLoop, trace: UsageTrace, fl: list[Fleet],
                    cfg: EnvConfig) -> EvalResult:
    """``balancer`` on every fleet, seeing ``loop``'s expected demand as the demand now."""
    return run_balancer(balancer, trace, fl, cfg, demand=lambda env: loop.expected(env.state()))


def _forecasters() -> dict[str, bfc.ForecastLoop]:
    return {d.name: bfc.load(d) for d in sorted(POLICIES.iterdir()) if (d / f"{bfc.STEM}.json").is_file()}


def tune(family: str) -> dict[str, Any]:
    """Each forecaster's cost with CP-SAT at each gain on training fleets of ``family`` (one size)."""
    shape, n_fleets, files = SCENARIOS["identical"]
    trace = load_usage(TRACES[family])
    train_vms = split(trace.names, TRAIN_FRACTION)[0]
    best = recorded_costs(family, files, 1)[1]
    fl = fleets(trace, train_vms, n_fleets, TUNE_SEEDS[0], shape)
    costs: dict[str, dict[str, float]] = {}
    for name, loop in _forecasters().items():
        costs[name] = {}
        for g in GAINS:
            r = run_on_forecast(make_balancer(best), replace(loop, gain=g), trace, fl, shape)
            costs[name][str(g)] = r.total()
            print(f"{name} {family} {best} gain {g}: {r.total():.1f} ({r.seconds:.0f} s)", flush=True)
    return {"date": date.today().isoformat(), "cp_sat": best,
            "tuning_fleets": {"seed": TUNE_SEEDS[0], "fleet_days": n_fleets}, "costs": costs}


def chosen_gains() -> dict[str, float]:
    """Each forecaster's gain: the lowest cost summed over both families' tuning runs."""
    docs = [json.loads(tune_file(f).read_text()) for f in TRACES]
    names = docs[0]["costs"]
    return {n: float(min((str(g) for g in GAINS), key=lambda g: sum(d["costs"][n][g] for d in docs)))
            for n in names}


def tune_file(family: str) -> Path:
    """Where the tuning stage writes ``family``'s costs."""
    return ROOT / f"bench/balance_forecast_cpsat_tune_{family}.json"


def held(family: str, seeds: int) -> dict[str, Any]:
    """Every forecaster, at its chosen gain, with CP-SAT on the held-back fleets of ``family``."""
    gains = chosen_gains()
    trace = load_usage(TRACES[family])
    held_vms = split(trace.names, TRAIN_FRACTION)[1]
    out: dict[str, Any] = {"date": date.today().isoformat(), "gains": gains, "scenarios": {}}
    for scenario, (shape, n_fleets, files) in SCENARIOS.items():
        _, best, cpsat = recorded_costs(family, files, seeds)
        res: dict[str, Any] = {"cp_sat": {"strategy": best, "cost": cpsat}, "cost": {}, "migrations": {}}
        for name, loop in _forecasters().items():
            runs = [run_on_forecast(make_balancer(best), replace(loop, gain=gains[name]), trace,
                                    fleets(trace, held_vms, n_fleets, s, shape), shape) for s in range(seeds)]
            res["cost"][name] = [r.total() for r in runs]
            res["migrations"][name] = sum(r.total("migrations") for r in runs)
            print(f"{family} {scenario} {name}: " + " ".join(f"{c:.1f}" for c in res["cost"][name]), flush=True)
        out["scenarios"][scenario] = res
    shape, n_fleets, _ = SCENARIOS["identical"]
    zero = run_on_forecast(make_balancer(out["scenarios"]["identical"]["cp_sat"]["strategy"]),
                           replace(next(iter(_forecasters().values())), gain=0.0), trace,
                           fleets(trace, held_vms, n_fleets, 0, shape), shape).total()
    recorded = out["scenarios"]["identical"]["cp_sat"]["cost"][0]
    assert abs(zero - recorded) < 1e-6, f"gain 0 does not reproduce the recorded CP-SAT ({zero} vs {recorded})"
    return out


def show(family: str, doc: dict[str, Any]) -> None:
    """One table per scenario."""
    for scenario, res in doc["scenarios"].items():
        ref = res["cp_sat"]["cost"]
        print(f"\n{family}, held-back VMs, {scenario} hosts: cost, core-h")
        print("| policy | mean ± sd | x tuned CP-SAT | seeds below CP-SAT | migrations |")
        print("|---|---|---|---|---|")
        print(f"| tuned {res['cp_sat']['strategy']} (recorded) | {statistics.mean(ref):.1f} ± "
              f"{statistics.stdev(ref):.1f} | 1.000 | | |")
        for name, c in res["cost"].items():
            below = sum(a < b for a, b in zip(c, ref, strict=True))
            print(f"| {res['cp_sat']['strategy']} on forecast {name} (gain {doc['gains'][name]}) | "
                  f"{statistics.mean(c):.1f} ± {statistics.stdev(c):.1f} | "
                  f"{statistics.mean(c) / statistics.mean(ref):.3f} | {below} of {len(c)} "
                  f"| {res['migrations'][name]:.0f} |")


def main() -> None:
    """``--stage tune`` or ``--stage held --family F``."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage", choices=("tune", "held"), required=True)
    ap.add_argument("--family", choices=tuple(TRACES))
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    t0 = time.perf_counter()
    families = [args.family] if args.family else list(TRACES)
    for family in families:
        if args.stage == "tune":
            tune_file(family).write_text(json.dumps(tune(family), indent=1) + "\n")
            print(f"{family}: tuned in {time.perf_counter() - t0:.0f} s")
            continue
        doc = held(family, args.seeds)
        doc["wall_s"] = time.perf_counter() - t0
        (ROOT / f"bench/balance_forecast_cpsat_{family}.json").write_text(json.dumps(doc, indent=1) + "\n")
        show(family, doc)


if __name__ == "__main__":
    main()
