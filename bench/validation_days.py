"""Consolidation-network checkpoints on each validation day, relative to their fallback (training-side data only).

The days are those ``llmvirt train --head consolidate-net --validate-days 3`` with ``--extra-trace`` Bitbrains July
and, with ``--validate-trace``, Bitbrains August would validate on, on both training fleets
(:func:`llmvirt.learn.train_consolidate_net.validation_episodes`). No held-back VM or day is read.

Usage: python bench/validation_days.py policies/consolidate-net-validated [DIR ...]   (each DIR holds seedS/)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llmvirt.learn import train_consolidate_net as tcn
from llmvirt.model.score import consolidation_cost
from llmvirt.policy import consolidate_net as cn
from llmvirt.sim import episodes
from llmvirt.sim.cloudsim_policies import run_policy
from llmvirt.sim.engine import Simulation
from llmvirt.strategies import registry

BITBRAINS = Path(__file__).resolve().parents[2] / "shared" / "traces" / "bitbrains-rnd"


def main() -> None:
    """Print one row a validation day: the fallback's cost and each checkpoint's relative to it."""
    ap = argparse.ArgumentParser()
    ap.add_argument("dirs", type=Path, nargs="+")
    args = ap.parse_args()
    cfg = tcn.ConsolidateNetConfig(fleets=("cloudsim", "ibm"), validate_days=3)
    days = tcn.validation_episodes(cfg, [BITBRAINS / "rnd_2013-7_week1.tar.gz"], [BITBRAINS / "rnd_2013-8.tar.gz"])
    nets = {f"{d.name}:{s.name.removeprefix('seed')}": registry.resolve(f"llmvirt-net:{s}", "consolidate").policy
            for d in args.dirs for s in sorted(d.glob("seed*"))}
    print(f"| validation day | fallback cost | {' | '.join(nets)} |\n|---|---|{'---|' * len(nets)}")
    for day in days:
        base = consolidation_cost(run_policy(Simulation(episodes.datacenter(day)), cn.policy(None)))
        rel = [consolidation_cost(run_policy(Simulation(episodes.datacenter(day)), p)) / base for p in nets.values()]
        print(f"| {episodes.label(day)} | {base:.1f} | {' | '.join(f'{r:.3f}' for r in rel)} |", flush=True)


if __name__ == "__main__":
    main()
