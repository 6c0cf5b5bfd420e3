"""What `rebalance --goal balance` runs by default, on the balance scoreboard beside the tuned baselines (issue 15).

The default for goal balance was ``llmvirt``'s rebalance loop (a host above the hot threshold relieved,
destinations ranked by the placement scorer); it runs by name as ``llmvirt-scorer``, and the JSON files committed
before the default moved to CP-SAT call it ``llmvirt``. Every balance claim is judged on fleets of Bitbrains VMs
(:mod:`llmvirt.bench.balance_rl`), but that default had never run there. Here it runs side by side with the tuned
baselines that also run on a scanned cluster (``tuned:watcher-wb``, ``tuned:proxmox-crs``, ``tuned:cp-sat``: the
points committed in policies/tuned_balance.json) and, for reference, the tuned fallback of the learned policy
(``tuned:llmvirt-rl-fallback``, which reads demand above a host's cores and so is not deployable on a scan):

- on the fleets of *training* VMs every baseline was tuned on (seeds 1000 and 1001);
- on the held-back fleets of bench/balance_shapes.py (5 seeds; 16 fleet-days a seed of one host size, 8 mixed).

July and August, one host size and mixed sizes. Cost: unmet plus migration core-hours (docs/metrics.md).

``--scan-view``: every balancer decides on what a scan shows instead of the demand. A scan measures use, and a
host's use stops at its cores: each VM's demand on a host whose demand exceeds its cores is scaled down to that
host's share (:func:`scan_view`). The simulator still charges the real demand. The deployable families are
re-tuned that way on the training fleets (:data:`SCAN_GRIDS`, triggers below a host's cores included, since
one at 1.0 can never fire on a scan), then run on the held-back fleets beside ``llmvirt-scorer``.

``--scan-view --point NAME``: no tuning; that one point beside ``llmvirt-scorer``, on the training and held-back fleets
(the one point chosen for all four scenarios).

Usage: python bench/balance_default.py [--family bitbrains-jul|bitbrains-aug] [--seeds 5] [--scan-view [--point P]]
Writes bench/balance_default_<family>[_scan[_P]].json and prints the table rows for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from balance_shapes import SCENARIOS  # noqa: E402

from llmvirt.bench.balance_rl import (  # noqa: E402
    PROXMOX_CRS_GRID,
    TUNE_SEEDS,
    fleets,
    run_balancer,
    run_named,
    scan_view,
    strategy_name,
    trace_families,
)
from llmvirt.sim.split import TRAIN_FRACTION, split  # noqa: E402
from llmvirt.sim.traces import load_usage  # noqa: E402
from llmvirt.strategies.registry import make_balancer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRACES = trace_families(ROOT.parent / "shared/traces")
BASE = "llmvirt-scorer"  #: what every row is compared with: the loop that was the default
POLICIES = (BASE, "llmvirt", "tuned:watcher-wb", "tuned:proxmox-crs", "tuned:cp-sat", "tuned:llmvirt-rl-fallback")
DEPLOYABLE = ("tuned:watcher-wb", "tuned:proxmox-crs", "tuned:cp-sat")  #: tuned baselines that run on a scan
SCAN_GRIDS: dict[str, tuple[str, ...]] = {
    "watcher-wb": tuple(f"watcher-wb:{t}" for t in (70, 80, 85, 90, 95, 100)),
    "proxmox-crs": PROXMOX_CRS_GRID,
    "cp-sat": tuple(f"cp-sat:2:{p}:{t}" for p in (0.1, 0.5) for t in (0.8, 0.9, 0.95)) + ("cp-sat:2:0.1",),
}
"""Each deployable family's grid under the scan view (the committed points among them)."""


def scan_family(name: str, seeds: int, point: str | None = None) -> dict[str, Any]:
    """``--scan-view``: each deployable family re-tuned on the training fleets deciding on the scan view, then its
    best point and ``llmvirt-scorer`` on the held-back fleets, all deciding on the scan view. With ``point``
    (``--point``), no tuning: that one point beside it."""
    trace = load_usage(TRACES[name])
    train, held = split(trace.names, TRAIN_FRACTION)
    out: dict[str, Any] = {"family": name, "date": date.today().isoformat(), "machine": platform.node(),
                           "view": "scan", "scenarios": {}}

    def run(strategy: str, fl: list, shape: Any) -> Any:  # noqa: ANN401
        return run_balancer(make_balancer(strategy), trace, fl, shape, strategy, demand=scan_view)

    for scenario, (shape, n_fleets, _) in SCENARIOS.items():
        t0 = time.perf_counter()
        training = [f for s in TUNE_SEEDS for f in fleets(trace, train, n_fleets, s, shape)]
        held_draws = [fleets(trace, held, n_fleets, s, shape) for s in range(seeds)]
        grids = {} if point else {f: {p: run(p, training, shape).total() for p in grid}
                                  for f, grid in SCAN_GRIDS.items()}
        chosen = {"one-point": point} if point else {f: min(g, key=lambda k, g=g: g[k]) for f, g in grids.items()}
        trained = {p: c for g in grids.values() for p, c in g.items()}  # every grid point's training cost
        rows: dict[str, Any] = {}
        for label, p in ((BASE, BASE), *((f"scan-tuned:{f}", p) for f, p in chosen.items())):
            if p not in trained:
                trained[p] = run(p, training, shape).total()
            hb = [run(p, fl, shape) for fl in held_draws]
            rows[label] = {"strategy": p, "training": trained[p], "held": [r.total() for r in hb],
                           "held_migrations": sum(r.total("migrations") for r in hb)}
        out["scenarios"][scenario] = {"grids": grids, "rows": rows}
        _print(name, scenario, rows)
        print(f"  ({scenario}: {time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def _print(name: str, scenario: str, rows: dict[str, Any]) -> None:
    base = rows[BASE]
    for p, r in rows.items():
        mean = statistics.mean(r["held"])
        print(f"| {name}, {scenario} | {p}{' (' + r['strategy'] + ')' if 'strategy' in r else ''} | "
              f"{r['training']:.1f} | {r['training'] / base['training']:.3f} | "
              f"{mean:.1f} ± {statistics.stdev(r['held']):.1f} | {mean / statistics.mean(base['held']):.3f} | "
              f"{sum(a < b for a, b in zip(r['held'], base['held'], strict=True))} |", flush=True)


def family(name: str, seeds: int) -> dict[str, Any]:
    """Every policy on the training and held-back fleets of each scenario of trace family ``name``."""
    trace = load_usage(TRACES[name])
    train, held = split(trace.names, TRAIN_FRACTION)
    out: dict[str, Any] = {"family": name, "date": date.today().isoformat(), "machine": platform.node(),
                           "runs": {p: strategy_name(p) for p in POLICIES}, "scenarios": {}}
    for scenario, (shape, n_fleets, _) in SCENARIOS.items():
        t0 = time.perf_counter()
        training = [f for s in TUNE_SEEDS for f in fleets(trace, train, n_fleets, s, shape)]
        held_draws = [fleets(trace, held, n_fleets, s, shape) for s in range(seeds)]
        rows: dict[str, Any] = {}
        for p in POLICIES:
            tr = run_named(p, trace, training, shape)
            hb = [run_named(p, trace, fl, shape) for fl in held_draws]
            rows[p] = {"training": tr.total(), "held": [r.total() for r in hb],
                       "held_migrations": sum(r.total("migrations") for r in hb),
                       "held_unmet_core_h": sum(r.total("unmet_core_h") for r in hb)}
        out["scenarios"][scenario] = rows
        _print(name, scenario, rows)
        print(f"  ({scenario}: {time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def main() -> None:
    """Run one trace family (or both, one after the other) and write its JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=sorted(TRACES), action="append")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--scan-view", action="store_true", help="decide on what a scan shows; re-tune on it")
    ap.add_argument("--point", help="with --scan-view: run this one point beside llmvirt-scorer instead of tuning")
    args = ap.parse_args()
    for name in args.family or sorted(TRACES):
        doc = scan_family(name, args.seeds, args.point) if args.scan_view else family(name, args.seeds)
        suffix = ("_scan" + (f"_{args.point.replace(':', '-')}" if args.point else "")) if args.scan_view else ""
        (ROOT / "bench" / f"balance_default_{name}{suffix}.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
