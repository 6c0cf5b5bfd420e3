"""The balance baselines' tuning sweep as a Pareto frontier: unmet demand against migration cost (issue 14).

Re-runs every grid point of the balance families (Watcher workload_balance, ProxLB, llmvirt's loop,
Proxmox's CRS; CP-SAT at its committed tuned point only: its whole grid takes about 30 minutes here)
on the same fleets of *training* VMs they were tuned on (seeds 1000 and 1001, 16 fleets each, both
Bitbrains months), keeping the cost's two components, summed over both months. Checks each point's
total against the grids the tuning recorded (bench/proxmox_crs.json, bench/cpsat_balance.json), marks
the points no other point beats on both components, plots them (bench/balance_frontier.png) and
prints the frontier. No held-back VM is used.

Usage: python bench/balance_frontier.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from llmvirt.bench import frontier
from llmvirt.bench.balance_rl import BASELINE_GRID, PROXMOX_CRS_GRID, TUNE_SEEDS, fleets, run_named, trace_families
from llmvirt.sim.balance_env import EnvConfig
from llmvirt.sim.split import split
from llmvirt.sim.traces import load_usage

ROOT = Path(__file__).resolve().parents[1]
GRID = {**BASELINE_GRID, "proxmox-crs": PROXMOX_CRS_GRID, "cp-sat": ("cp-sat:2:0.1",)}
KEYS = ("unmet_core_h", "migration_core_h")


def _recorded() -> dict[str, dict[str, float]]:
    """trace family -> grid point -> the training cost the tuning recorded."""
    out: dict[str, dict[str, float]] = {}
    crs = json.loads((ROOT / "bench/proxmox_crs.json").read_text())["balance"]["families"]
    cpsat = json.loads((ROOT / "bench/cpsat_balance.json").read_text())["families"]
    for trace in crs:
        out[trace] = {p: c for t in crs[trace]["tuned"].values() for p, c in t["grid"].items()}
        out[trace].update(cpsat[trace]["tuned"]["grid"])
    return out


def main() -> None:
    """Run, check, mark, plot, print."""
    t0 = time.perf_counter()
    cfg = EnvConfig()
    recorded = _recorded()
    tuned = json.loads((ROOT / "policies/tuned_balance.json").read_text())["families"]
    points = {(fam, p): {"family": fam, "name": p, **dict.fromkeys(KEYS, 0.0)} for fam, g in GRID.items() for p in g}
    worst = 0.0
    for trace_name, path in trace_families(ROOT.parent / "shared/traces").items():
        trace = load_usage(path)
        train, _ = split(trace.names)
        fl = [f for s in TUNE_SEEDS for f in fleets(trace, train, 16, s, cfg)]
        for (_fam, p), row in points.items():
            res = run_named(p, trace, fl, cfg)
            for k in KEYS:
                row[k] += res.total(k)
            if p in recorded[trace_name]:
                worst = max(worst, abs(res.total("cost") - recorded[trace_name][p]))
        print(f"{trace_name}: {time.perf_counter() - t0:.0f} s", flush=True)
    rows = list(points.values())
    for row, on in zip(rows, frontier.pareto(rows, KEYS), strict=True):
        row["on_frontier"], row["tuned"] = on, tuned.get(row["family"], {}).get("best") == row["name"]
        row["cost"] = row["unmet_core_h"] + row["migration_core_h"]
    _plot(rows, ROOT / "bench/balance_frontier.png")
    print(f"\n{len(rows)} grid points; largest difference from the recorded training costs: {worst:.2e} core-h")
    print(f"{sum(r['on_frontier'] for r in rows)} on the frontier of unmet demand and migration cost "
          "(core-hours, 64 training fleet-days):\n")
    print("| family | point | unmet core-h | migration core-h | cost | tuned pick |")
    print("|---|---|---:|---:|---:|---|")
    for r in sorted((r for r in rows if r["on_frontier"]), key=lambda r: r["migration_core_h"]):
        print(f"| {r['family']} | {r['name']} | {r['unmet_core_h']:.1f} | {r['migration_core_h']:.1f} | "
              f"{r['cost']:.1f} | {'yes' if r['tuned'] else ''} |")
    off = [r for r in rows if r["tuned"] and not r["on_frontier"]]
    print("\ntuned picks off the frontier: " + (", ".join(r["name"] for r in off) or "none"))
    print(f"\n({time.perf_counter() - t0:.0f} s)")


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for fam in GRID:
        mine = [r for r in rows if r["family"] == fam]
        ax.scatter([r["migration_core_h"] for r in mine], [r["unmet_core_h"] for r in mine], label=fam, s=18)
    front = sorted((r for r in rows if r["on_frontier"]), key=lambda r: r["migration_core_h"])
    ax.plot([r["migration_core_h"] for r in front], [r["unmet_core_h"] for r in front], "k--", lw=0.8,
            label="frontier")
    picks = [r for r in rows if r["tuned"]]
    ax.scatter([r["migration_core_h"] for r in picks], [r["unmet_core_h"] for r in picks], marker="*", s=140,
               facecolors="none", edgecolors="k", label="tuned pick")
    ax.set_xlabel("migration core-hours (64 training fleet-days)")
    ax.set_ylabel("unmet demand, core-hours")
    ax.set_yscale("log")
    ax.set_title("Balance baselines' tuning sweep (training VMs, both months)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
