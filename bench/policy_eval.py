"""The learned policy against the field baselines in the balance scenario, on Bitbrains VMs it was
not trained on (the held-out side of the same sha256(name) split the trainer uses).

Usage: python bench/policy_eval.py [--policy policies/default]
"""

from __future__ import annotations

import argparse
import time
from datetime import date
from pathlib import Path

from llmvirt.model.arrays import FleetSetup
from llmvirt.sim.fleet import BALANCE_SETUP, FleetSim
from llmvirt.sim.split import split
from llmvirt.sim.traces import load_bitbrains
from llmvirt.strategies.registry import make_balancer

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DENSE = FleetSetup(cpu_allocation_ratio=8.0, ram_allocation_ratio=1.0, fill=1.0)


def main() -> None:
    """Print one Markdown table per fleet set-up."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", default="policies/default")
    args = ap.parse_args()
    trace = load_bitbrains(SHARED / "traces" / "bitbrains-rnd" / "rnd_2013-7_week1.tar.gz")
    train_idx, held = split(trace.names)
    test = trace.select(held)
    names = ["none", "watcher-wb", "watcher-wb:70", "proxlb", "llmvirt:baseline:least-loaded",
             f"llmvirt:{args.policy}"]
    print(f"# balance scenario on {held.size} held-out Bitbrains VMs (trained on {train_idx.size}), {date.today()}")
    for label, setup, extra in (("default set-up, one spare host", BALANCE_SETUP, 1),
                                ("dense set-up (8:1 vCPUs, fully packed), no spare host", DENSE, 0)):
        print(f"\n{label}\n\n| policy | hosts | overload host-h | migrations | GiB migrated | CPU spread | s |")
        print("|---|---|---|---|---|---|---|")
        for name in names:
            sim = FleetSim(test, setup, extra_hosts=extra)
            t0 = time.perf_counter()
            s = sim.run(balance=make_balancer(name)).summary()
            print(f"| {name} | {sim.n_hosts} | {s['host_overload_h']:.2f} | {s['migrations']} | "
                  f"{s['gib_migrated']:.0f} | {s['cpu_spread_avg']:.2f} | {time.perf_counter() - t0:.1f} |")


if __name__ == "__main__":
    main()
