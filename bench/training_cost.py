"""The training-day cost of consolidation-network checkpoints, by trace and by servers (what the pre-registered
shipping rules in bench/RESULTS.md read): each seed's kept weights' cost relative to the fallback's, averaged
over the days of each trace family on each fleet, from the record the trainer writes into the checkpoint.

Usage: python bench/training_cost.py policies/consolidate-net-fleets [DIR ...]   (each DIR holds seedS/ checkpoints,
       or is a checkpoint itself)
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from llmvirt.policy import consolidate_net
from llmvirt.sim.datacenter import FLEETS


def group(label: str) -> str:
    """``trace on fleet`` for a training day's label: a PlanetLab day (``20110303``, ``20110303:all:0:0.15:ibm``)
    or a usage day (``rnd_2013-7_week1.tar.gz:train:0:0.76``)."""
    parts = label.split(":")
    fleet = parts[-1] if len(parts) > 4 and parts[-1] in FLEETS else "cloudsim"
    trace = "planetlab" if parts[0].isdigit() else parts[0]
    return f"{trace} on {fleet}"


def by_group(checkpoint: Path) -> dict[str, float]:
    """The kept weights' mean cost relative to the fallback's over each group's training days."""
    meta = json.loads((checkpoint / f"{consolidate_net.SPEC_NAME}.json").read_text())
    record = meta["training"]
    rel: dict[str, list[float]] = {}
    for label, base in record["fallback_cost"].items():
        rel.setdefault(group(label), []).append(record["kept_cost"][label]["cost"] / base)
    return {g: statistics.mean(v) for g, v in rel.items()}


def main() -> None:
    """Print one row a checkpoint and the mean over each directory's seeds."""
    ap = argparse.ArgumentParser()
    ap.add_argument("dirs", type=Path, nargs="+")
    args = ap.parse_args()
    for root in args.dirs:
        seeds = sorted(root.glob("seed*")) or [root]
        rows = {d.name: by_group(d) for d in seeds}
        groups = sorted({g for r in rows.values() for g in r})
        print(f"\n{root}: training days, cost relative to the fallback's\n")
        print(f"| checkpoint | {' | '.join(groups)} |\n|---|{'---|' * len(groups)}")
        for name, r in rows.items():
            print(f"| {name} | {' | '.join(f'{r[g]:.4f}' if g in r else '-' for g in groups)} |")
        means = [statistics.mean(r[g] for r in rows.values() if g in r) for g in groups]
        print(f"| mean | {' | '.join(f'{m:.4f}' for m in means)} |")


if __name__ == "__main__":
    main()
