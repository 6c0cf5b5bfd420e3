"""What `rebalance --goal balance` runs by default, on the balance scoreboard beside the tuned baselines (issue 15).

The default for goal balance is ``llmvirt``: llmvirt's rebalance loop (a host above the hot threshold relieved,
destinations ranked by the placement scorer). Every balance claim is judged on fleets of Bitbrains VMs
(:mod:`llmvirt.bench.balance_rl`), but that default had never run there. Here it runs side by side with the tuned
baselines that also run on a scanned cluster (``tuned:watcher-wb``, ``tuned:proxmox-crs``, ``tuned:cp-sat``: the
points committed in policies/tuned_balance.json) and, for reference, the tuned fallback of the learned policy
(``tuned:llmvirt-rl-fallback``, which reads demand above a host's cores and so is not deployable on a scan):

- on the fleets of *training* VMs every baseline was tuned on (seeds 1000 and 1001);
- on the held-back fleets of bench/balance_shapes.py (5 seeds; 16 fleet-days a seed of one host size, 8 mixed).

July and August, one host size and mixed sizes. Cost: unmet plus migration core-hours (docs/metrics.md).

Usage: python bench/balance_default.py [--family bitbrains-jul|bitbrains-aug] [--seeds 5]
Writes bench/balance_default_<family>.json and prints the table rows for RESULTS.md.
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

from llmvirt.bench.balance_rl import TUNE_SEEDS, fleets, run_named, strategy_name, trace_families  # noqa: E402
from llmvirt.sim.split import TRAIN_FRACTION, split  # noqa: E402
from llmvirt.sim.traces import load_usage  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRACES = trace_families(ROOT.parent / "shared/traces")
POLICIES = ("llmvirt", "tuned:watcher-wb", "tuned:proxmox-crs", "tuned:cp-sat", "tuned:llmvirt-rl-fallback")
DEPLOYABLE = ("tuned:watcher-wb", "tuned:proxmox-crs", "tuned:cp-sat")  #: tuned baselines that run on a scan


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
        base = rows["llmvirt"]
        for p, r in rows.items():
            mean = statistics.mean(r["held"])
            print(f"| {name}, {scenario} | {p} | {r['training']:.1f} | {r['training'] / base['training']:.3f} | "
                  f"{mean:.1f} ± {statistics.stdev(r['held']):.1f} | {mean / statistics.mean(base['held']):.3f} | "
                  f"{sum(a < b for a, b in zip(r['held'], base['held'], strict=True))} |", flush=True)
        print(f"  ({scenario}: {time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def main() -> None:
    """Run one trace family (or both, one after the other) and write its JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=sorted(TRACES), action="append")
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    for name in args.family or sorted(TRACES):
        doc = family(name, args.seeds)
        (ROOT / "bench" / f"balance_default_{name}.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
