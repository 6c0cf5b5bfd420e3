"""The cloudsim tuning sweep (policies/tuned.json, from `llmvirt tune`) as a Pareto frontier (issue 14).

Reads the committed sweep (no simulation), marks every grid point that no other point beats on energy,
unmet demand and GiB migrated at once, plots energy against unmet demand and against GiB moved, and
prints the frontier for RESULTS.md.

Usage: python bench/tuned_frontier.py [--tuned policies/tuned.json] [--plot bench/tuned_frontier.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llmvirt.bench import frontier

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Plot and print."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--tuned", type=Path, default=ROOT / "policies/tuned.json")
    ap.add_argument("--plot", type=Path, default=ROOT / "bench/tuned_frontier.png")
    args = ap.parse_args()
    doc = json.loads(args.tuned.read_text())
    frontier.plot(doc, args.plot)
    rows = frontier.frontier_rows(doc)
    print(f"{len(rows)} grid points, {sum(r['on_frontier'] for r in rows)} on the frontier "
          f"(energy, unmet demand, GiB migrated); weights of the cost: {doc['cost_weights']}")
    print("| family | point | energy kWh/day | unmet demand % | GiB migrated/day | cost | tuned pick |")
    print("|---|---|---:|---:|---:|---:|---|")
    for r in sorted((r for r in rows if r["on_frontier"]), key=lambda r: r["energy_kwh"]):
        print(f"| {r['family']} | {r['name']} | {r['energy_kwh']:.1f} | {r['unmet_demand_pct']:.4f} | "
              f"{r['gib_migrated']:.0f} | {r['cost']:.1f} | {'yes' if r['tuned'] else ''} |")
    print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
