"""Tune the baselines as hard as llmvirt's own policy: a grid search per family, on the training
split only, by the one honest cost (:func:`llmvirt.model.score.consolidation_cost`).

Families of the cloudsim scenario and their grids:

- ``thr-mmt``, ``iqr-mmt``, ``mad-mmt``, ``lr-mmt``: CloudSim's detectors with MMT selection, over
  their threshold or safety parameter;
- ``gated-thr-mmt``: the structure the learned consolidation head has (THR-MMT with a
  consolidation gate and interval), grid-searched instead of learned: the head's own family as a
  baseline, so what the learning adds can be seen;
- ``gated-wake-thr-mmt``: the same, placing VMs as if an empty host cost its idle power (CloudSim's
  PABFD counts only the increase over 0 %, so it wakes hosts as readily as it fills running ones).

Every grid point is kept (the frontier: energy, unmet demand and GiB moved against each other),
and the best of each family is what ``tuned:FAMILY`` runs. The result is a JSON file committed in
``policies/tuned.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

from llmvirt.model.score import COST_WEIGHTS, consolidation_cost
from llmvirt.strategies.tuned import TUNED_FILE  # noqa: F401 - where the result goes

GRIDS: dict[str, list[str]] = {
    "thr-mmt": [f"thr-mmt-{t}" for t in (0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)],
    "iqr-mmt": [f"iqr-mmt-{s}" for s in (1.0, 1.5, 2.0, 2.5, 3.0)],
    "mad-mmt": [f"mad-mmt-{s}" for s in (1.5, 2.0, 2.5, 3.0, 3.5)],
    "lr-mmt": [f"lr-mmt-{s}" for s in (1.0, 1.1, 1.2, 1.3, 1.4)],
    "gated-thr-mmt": [f"gated:{t}:{e}:{b}" for t in (0.8, 0.9, 0.95, 0.99, 1.0) for e in (1, 2, 4)
                      for b in (0.3, 0.5, 0.7)],
    "gated-wake-thr-mmt": [f"gated:{t}:{e}:{b}:wake" for t in (0.8, 0.85, 0.9, 0.95, 0.99, 1.0) for e in (1, 2, 4)
                           for b in (0.3, 0.4, 0.5, 0.6, 0.7)],
}  #: the grid of each family, as strategy names


def run_one(day: str, name: str, fleet: str = "cloudsim") -> dict[str, float]:
    """One strategy on one PlanetLab day, on ``fleet``'s hosts: its summary, with the honest cost."""
    from llmvirt.sim import episodes
    from llmvirt.sim.cloudsim_policies import run_policy
    from llmvirt.sim.engine import Simulation
    from llmvirt.strategies.registry import make_policy

    summary = run_policy(Simulation(episodes.datacenter(episodes.on_fleet(day, fleet))), make_policy(name))
    return {**summary, "cost": consolidation_cost(summary)}


def _job(args: tuple[str, str, str]) -> tuple[str, str, dict[str, float]]:
    day, name, fleet = args
    return day, name, run_one(day, name, fleet)


def tune_cloudsim(days: list[Path], families: list[str] | None = None, workers: int = 2,
                  progress: Callable[[int, int], None] | None = None, fleet: str = "cloudsim") -> dict[str, Any]:
    """Grid-search every family on ``days`` with hosts of ``fleet`` (:data:`llmvirt.sim.datacenter.FLEETS`);
    the document written to ``policies/tuned.json`` (CloudSim's fleet) or ``policies/tuned_<fleet>.json``."""
    from llmvirt.sim.datacenter import FLEETS

    fams = families or list(GRIDS)
    unknown = [f for f in fams if f not in GRIDS]
    if unknown:
        raise ValueError(f"unknown family {unknown[0]!r}: use {', '.join(GRIDS)}")
    if fleet not in FLEETS:
        raise ValueError(f"unknown fleet {fleet!r}: use {', '.join(FLEETS)}")
    jobs = [(str(d), name, fleet) for f in fams for name in GRIDS[f] for d in days]
    runs: dict[tuple[str, str], dict[str, float]] = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for i, (day, name, summary) in enumerate(pool.map(_job, jobs), 1):
            runs[(day, name)] = summary
            if progress is not None:
                progress(i, len(jobs))
    keys = ("cost", "energy_kwh", "unmet_core_h", "gib_migrated", "migrations", "overload_host_h",
            "unmet_demand_pct")
    doc: dict[str, Any] = {"scenario": "cloudsim", "date": date.today().isoformat(), "cost_weights": COST_WEIGHTS,
                           "train_days": [d.name for d in days], "families": {}}
    if fleet != "cloudsim":
        doc["fleet"] = fleet
    for f in fams:
        grid = []
        for name in GRIDS[f]:
            per_day = [runs[(str(d), name)] for d in days]
            grid.append({"name": name, **{k: round(sum(r[k] for r in per_day) / len(per_day), 6) for k in keys}})
        best = min(grid, key=lambda g: g["cost"])
        doc["families"][f] = {"best": best["name"], "cost": best["cost"], "grid": grid}
    return doc
