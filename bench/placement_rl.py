"""Placement: the placement scorer optimised on the cost against tuned placement baselines (issue 15).

The placement scenario (llmvirt/sim/placement_env.py): half of a fleet's VMs run from the start, the other
half arrive during the day and are each placed once by the policy; nothing migrates; the cost is unmet
CPU demand in core-hours. Fleets of one host size and of mixed sizes (llmvirt/sim/fleet_shapes.py), VMs of
Bitbrains July and August.

--tune: grid-search the baseline family ``baseline:weighted:C:V:M:P`` (weights 0, 0.25, ..., 1 on CPU use,
vCPU allocation, memory allocation and the host's recent peak CPU use, each after the VM) on fleets of
*training* VMs (seed 4242, 24 fleets per trace and shape) and write policies/tuned_placement.json: the tuned
baseline, and the start of ``llmvirt train --head place-rl``.

Without --tune: every policy on fleets of *held-back* VMs, seeds 0..S-1, 16 fleets per seed, trace and
shape: first-fit, best-fit, least-loaded, the tuned weighted baseline, the placement scorer shipped before
(imitation of a lookahead planner, policies/default), and the policies under test (default policies/place-rl;
``--policy`` again for other training seeds), whose ablation (a) is the tuned baseline they start from.
Writes bench/placement_rl.json and prints tables.

--peak-windows: how the hosts' recent peak was defined (window and quantile), on the --tune fleets of training
VMs: for windows of 12, 36, 72 and 288 steps and the 90th percentile or the maximum, the three best points
of a small weighted grid with a peak weight (C in 0, 0.5, 1; P in 0.5, 1, 2; V in 0, 0.5, 0.75, 1; M 0).

--sensitivity: how much random perturbations of the search's start, at several scales, change its cost on
fleets of training VMs (how the search's sigma was chosen).

Usage: python bench/placement_rl.py [--tune | --peak-windows | --sensitivity] [--policy policies/place-rl ...]
[--seeds 5]
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import numpy as np

from llmvirt.bench.balance_rl import trace_families
from llmvirt.learn import train_place_rl as rl
from llmvirt.policy import decide
from llmvirt.policy.arrivals import WeightedScorer, chooser
from llmvirt.sim.fleet_shapes import SHAPES
from llmvirt.sim.split import split
from llmvirt.sim.traces import load_usage

ROOT = Path(__file__).resolve().parents[1]
TUNED = ROOT / "policies" / "tuned_placement.json"
GRID = [w for w in itertools.product((0, 0.25, 0.5, 0.75, 1), repeat=4) if sum(w) > 0]
BEFORE_PEAKS = "baseline:weighted:1:0.75:0"  #: the tuned baseline before hosts' recent peaks were a feature
RULES = ("baseline:first-fit", "baseline:best-fit", "baseline:least-loaded")


def load() -> dict[str, tuple]:
    """family -> (trace, training VMs, held-back VMs)."""
    out = {}
    for family, path in trace_families(ROOT.parent / "shared/traces").items():
        tr = load_usage(path)
        train, held = split(tr.names)
        out[family] = (tr, train, held)
    return out


def tune(data: dict[str, tuple]) -> dict:
    """The weighted family's grid on fleets of training VMs; the lowest total cost wins."""
    traces = [(tr, train) for tr, train, _ in data.values()]
    shapes = list(SHAPES.values())
    util = rl.expected_util(traces, shapes[0].mhz_per_core)
    eps = rl.episodes(traces, shapes, 24 * len(traces) * len(shapes), np.random.default_rng(4242))
    costs = {WeightedScorer(w).name.removeprefix("baseline:weighted:"): rl.cost(eps, chooser(WeightedScorer(w), util))
             for w in GRID}
    for name in RULES:
        costs[name] = rl.cost(eps, chooser(decide.load_scorer(name), util))
    best = min((k for k in costs if not k.startswith("baseline:")), key=costs.__getitem__)
    doc = {"strategy": f"baseline:weighted:{best}", "expected_cpu": util, "fleets": len(eps), "seed": 4242,
           "selected_on": "fleets of training VMs (sha256(name) < 0.6), Bitbrains July and August, both shapes",
           "cost_per_capacity": {k: round(v, 6) for k, v in sorted(costs.items(), key=lambda kv: kv[1])}}
    TUNED.write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def peak_windows(data: dict[str, tuple]) -> None:
    """The peak's window and quantile (see the module docstring), on the tuning's fleets of training VMs."""
    traces = [(tr, train) for tr, train, _ in data.values()]
    shapes = list(SHAPES.values())
    util = rl.expected_util(traces, shapes[0].mhz_per_core)
    eps = rl.episodes(traces, shapes, 24 * len(traces) * len(shapes), np.random.default_rng(4242))
    print(f"without the peak, {BEFORE_PEAKS}: {rl.cost(eps, chooser(decide.load_scorer(BEFORE_PEAKS), util)):.4f}")
    grid = list(itertools.product((0, 0.5, 1), (0, 0.5, 0.75, 1), (0.5, 1, 2)))
    for window, q in itertools.product((12, 36, 72, 288), (0.9, 1.0)):
        for ep, _ in eps:
            ep.peak_window = (window, q)
        costs = sorted((rl.cost(eps, chooser(WeightedScorer((c, v, 0, p)), util)), f"{c:g}:{v:g}:0:{p:g}")
                       for c, v, p in grid)
        print(f"window {window} steps, quantile {q:g}: " + ", ".join(f"{n} {c:.4f}" for c, n in costs[:3]))


def sensitivity(data: dict[str, tuple]) -> None:
    """How much a perturbation of each scale changes the imitation start's cost, on 24 fleets of training VMs
    (how the search's sigma was chosen): six random perturbations per scale."""
    traces = [(tr, train) for tr, train, _ in data.values()]
    shapes = list(SHAPES.values())
    util = rl.expected_util(traces, shapes[0].mhz_per_core)
    cfg = rl.PlaceRlConfig(init=json.loads(TUNED.read_text())["strategy"])
    net = rl._Net(cfg.hidden, util)
    theta = rl.imitate(net, rl.episodes(traces, shapes, cfg.episodes, np.random.default_rng(17)), cfg)
    eps = rl.episodes(traces, shapes, 24, np.random.default_rng(5))
    print(f"start: {rl.cost(eps, net.choose(theta)):.3f}")
    rng = np.random.default_rng(0)
    for sigma in (0.03, 0.1, 0.2, 0.4):
        costs = [rl.cost(eps, net.choose(theta + sigma * rng.standard_normal(theta.size))) for _ in range(6)]
        print(f"sigma {sigma}: " + ", ".join(f"{c:.3f}" for c in costs))


def policies(paths: list[Path], tuned: str) -> dict[str, object]:
    """Every scorer compared, by display name (each trained policy with its training seed)."""
    out = {name.removeprefix("baseline:"): decide.load_scorer(name) for name in RULES}
    out[f"tuned before peaks {BEFORE_PEAKS.removeprefix('baseline:')}"] = decide.load_scorer(BEFORE_PEAKS)
    out[f"tuned {tuned.removeprefix('baseline:')}"] = decide.load_scorer(tuned)
    out["imitation scorer (before)"] = decide.load_scorer(str(ROOT / "policies" / "default"))
    for path in paths:
        sc = decide.load_scorer(str(path))
        before = "" if sc.reads_peaks else ", before peaks"  # a checkpoint of feature spec 1
        out[f"place-rl seed {sc.meta['training']['config']['seed']}{before}"] = sc
    return out


def held_back(data: dict[str, tuple], scorers: dict[str, object], util: float, seeds: int) -> dict:
    """Per family and shape: per seed, each scorer's summed cost and the summed bound, core-hours."""
    out: dict = {}
    for family, (tr, _train, held) in data.items():
        for shape_name, shape in SHAPES.items():
            runs = []
            for seed in range(seeds):
                eps = rl.episodes([(tr, held)], [shape], 16, np.random.default_rng(seed))
                row = {"bound": sum(ep.run(lambda _a: -1)["bound_core_h"] for ep, _ in eps)}
                for name, sc in scorers.items():
                    figs = [ep.run(chooser(sc, util)) for ep, _ in eps]
                    row[name] = sum(f["cost"] for f in figs)
                    row[f"{name} rejected"] = sum(f["rejected"] for f in figs)
                runs.append(row)
            out[f"{family}/{shape_name}"] = runs
    return out


def table(results: dict, names: list[str], tuned_name: str) -> None:
    """Markdown: mean (min-max) over seeds, and the ratio to the tuned baseline."""
    print("| fleets | " + " | ".join(names) + " | fluid bound |")
    print("|---" * (len(names) + 2) + "|")
    for key, runs in results.items():
        cells = []
        for n in names:
            c = [r[n] for r in runs]
            ratio = statistics.mean(c) / statistics.mean([r[tuned_name] for r in runs])
            cells.append(f"{statistics.mean(c):.0f} ({min(c):.0f}-{max(c):.0f}) x{ratio:.3f}")
        print(f"| {key} | " + " | ".join(cells) + f" | {statistics.mean([r['bound'] for r in runs]):.0f} |")


def main() -> None:
    """Tune, or run the held-back comparison."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--tune", action="store_true")
    ap.add_argument("--sensitivity", action="store_true", help="the search's perturbation scales, on training VMs")
    ap.add_argument("--peak-windows", action="store_true", help="the hosts' recent peak: window and quantile, on "
                    "training VMs")
    ap.add_argument("--policy", type=Path, action="append", help="a trained placement policy (repeat for several "
                    "training seeds; default policies/place-rl)")
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    t0 = time.perf_counter()
    data = load()
    if args.sensitivity:
        sensitivity(data)
        return
    if args.peak_windows:
        peak_windows(data)
        return
    if args.tune:
        doc = tune(data)
        print(json.dumps({k: doc[k] for k in ("strategy", "expected_cpu", "fleets")}))
        print(json.dumps(dict(list(doc["cost_per_capacity"].items())[:8]), indent=1))
        return
    tuned = json.loads(TUNED.read_text())
    scorers = policies(args.policy or [ROOT / "policies" / "place-rl"], tuned["strategy"])
    results = held_back(data, scorers, tuned["expected_cpu"], args.seeds)
    (ROOT / "bench" / "placement_rl.json").write_text(json.dumps(
        {"date": str(date.today()), "machine": f"{platform.machine()} {platform.node()}", "seeds": args.seeds,
         "tuned": tuned["strategy"], "expected_cpu": tuned["expected_cpu"], "results": results}, indent=1) + "\n")
    print(f"# placement, held-back VMs, {args.seeds} seeds x 16 fleets per trace and shape; unmet core-hours, "
          f"mean (min-max) over seeds, x ratio to the tuned baseline; {date.today()}, "
          f"{time.perf_counter() - t0:.0f} s")
    table(results, list(scorers), f"tuned {tuned['strategy'].removeprefix('baseline:')}")


if __name__ == "__main__":
    main()
