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
``policies/tuned.json``. That file and ``policies/tuned_tail.json`` were tuned when ``gated-thr-mmt``'s grid had
gates 0.3, 0.5 and 0.7 only (and thresholds without 0.85); each file lists the grid it searched, and
``policies/tuned_relative_tail.json`` is the first on the one grid both gated families now share.

Days are PlanetLab day directories or usage days (:class:`llmvirt.sim.episodes.UsageDay`: the training VMs of a
Bitbrains or generic trace, one day each). The best point of a family is the one with the lowest
:data:`OBJECTIVES` value: ``mean``, the mean cost over the days; or ``tail``, which weighs a policy's bad days as
well as its usual ones: for each trace family (:func:`llmvirt.sim.episodes.family`) the mean cost per day plus
the mean of its costliest :data:`TAIL_SHARE` of days (at least one; CVaR), summed over the families, so that
a family counts alike whatever its number of days. Not whatever its scale: the costs are absolute, so a family of
larger data centres weighs more (PlanetLab's 800 hosts about fifteen times a Bitbrains fleet). ``relative-tail``
removes the scale: each family's tail score is divided by that of :data:`REFERENCE` (CloudSim's untuned static
threshold) on the same days, so every trace family weighs one and the reference scores one per family.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmvirt.model.score import COST_WEIGHTS, consolidation_cost
from llmvirt.strategies.tuned import TUNED_FILE  # noqa: F401 - where the result goes

if TYPE_CHECKING:
    from llmvirt.sim.episodes import Episode

_GATE_THRESHOLDS = (0.8, 0.85, 0.9, 0.95, 0.99, 1.0)
_GATES = (0.3, 0.4, 0.5, 0.6, 0.7)
GRIDS: dict[str, list[str]] = {
    "thr-mmt": [f"thr-mmt-{t}" for t in (0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)],
    "iqr-mmt": [f"iqr-mmt-{s}" for s in (1.0, 1.5, 2.0, 2.5, 3.0)],
    "mad-mmt": [f"mad-mmt-{s}" for s in (1.5, 2.0, 2.5, 3.0, 3.5)],
    "lr-mmt": [f"lr-mmt-{s}" for s in (1.0, 1.1, 1.2, 1.3, 1.4)],
    "gated-thr-mmt": [f"gated:{t}:{e}:{b}" for t in _GATE_THRESHOLDS for e in (1, 2, 4) for b in _GATES],
    "gated-wake-thr-mmt": [f"gated:{t}:{e}:{b}:wake" for t in _GATE_THRESHOLDS for e in (1, 2, 4) for b in _GATES],
}  #: the grid of each family, as strategy names (the two gated families on the same grid)
OBJECTIVES = ("mean", "tail", "relative-tail")  #: what "best" means: the mean cost, or per trace family mean
#: plus worst days, absolute or relative to :data:`REFERENCE`
TAIL_SHARE = 0.1  #: the share of a family's costliest days the ``tail`` objective adds (CVaR at 90 %)
REFERENCE = "thr-mmt-0.8"  #: what ``relative-tail`` divides each trace family's tail score by (untuned, fixed)


def tail_parts(days: list[float]) -> tuple[float, float]:
    """One trace family's two parts of the tail score: its mean cost per day, and the mean of its costliest
    :data:`TAIL_SHARE` of days (at least one)."""
    worst = sorted(days, reverse=True)[:max(1, math.ceil(TAIL_SHARE * len(days)))]
    return sum(days) / len(days), sum(worst) / len(worst)


def _known_objective(kind: str) -> None:
    """Refuse an objective that is not one of :data:`OBJECTIVES`."""
    if kind not in OBJECTIVES:
        raise ValueError(f"unknown objective {kind!r}: use {', '.join(OBJECTIVES)}")


def objective(costs: dict[str, list[float]], kind: str, reference: dict[str, list[float]] | None = None) -> float:
    """A grid point's score from its cost on each day, by trace family: ``mean`` over every day, ``tail`` (per
    family the mean plus the mean of the costliest :data:`TAIL_SHARE` of days, summed over families), or
    ``relative-tail`` (each family's tail score over ``reference``'s on the same family, summed)."""
    _known_objective(kind)
    if kind == "mean":
        every = [c for days in costs.values() for c in days]
        return sum(every) / len(every)
    if kind == "tail":
        return sum(sum(tail_parts(days)) for days in costs.values())
    if reference is None or set(reference) != set(costs):
        raise ValueError("the relative-tail objective needs the reference's costs on the same trace families")
    return sum(sum(tail_parts(days)) / sum(tail_parts(reference[f])) for f, days in costs.items())


@dataclass(frozen=True)
class Setting:
    """What a tuning simulates and optimises: ``fleet``'s hosts (:data:`llmvirt.sim.datacenter.FLEETS`), the
    objective ``kind`` (:data:`OBJECTIVES`), and migrations ``migration_slowdown`` times slower than simulated."""

    fleet: str = "cloudsim"
    kind: str = "mean"
    migration_slowdown: float = 1.0


def run_one(day: Episode | Path, name: str, fleet: str = "cloudsim", migration_slowdown: float = 1.0
            ) -> dict[str, float]:
    """One strategy on one PlanetLab day or usage day, on ``fleet``'s hosts, with migrations ``migration_slowdown``
    times slower than simulated: its summary, with the honest cost."""
    from llmvirt.sim import episodes
    from llmvirt.sim.cloudsim_policies import run_policy
    from llmvirt.sim.engine import Simulation
    from llmvirt.strategies.registry import make_policy

    sim = Simulation(episodes.datacenter(episodes.on_fleet(day, fleet)))
    summary = run_policy(sim, make_policy(name), migration_slowdown)
    return {**summary, "cost": consolidation_cost(summary)}


def _job(args: tuple[Episode, str, Setting]) -> tuple[str, str, dict[str, float]]:
    from llmvirt.sim import episodes

    day, name, setting = args
    return episodes.label(day), name, run_one(day, name, setting.fleet, setting.migration_slowdown)


def point_summary(name: str, eps: list[Episode], runs: dict[tuple[str, str], dict[str, float]], kind: str
           ) -> dict[str, Any]:
    """One grid point's entry: its mean summary over the days, and (objective other than ``mean``) its score."""
    from llmvirt.sim import episodes

    keys = ("cost", "energy_kwh", "unmet_core_h", "gib_migrated", "migrations", "overload_host_h",
            "unmet_demand_pct")
    per_day = [runs[(episodes.label(d), name)] for d in eps]
    point: dict[str, Any] = {"name": name, **{k: round(sum(r[k] for r in per_day) / len(per_day), 6) for k in keys}}
    if kind != "mean":
        reference = _by_family(eps, runs, REFERENCE) if kind == "relative-tail" else None
        point["objective"] = round(objective(_by_family(eps, runs, name), kind, reference), 6)
    return point


def _by_family(eps: list[Episode], runs: dict[tuple[str, str], dict[str, float]], name: str
               ) -> dict[str, list[float]]:
    """``name``'s cost on each day, by trace family (:func:`llmvirt.sim.episodes.family`)."""
    from llmvirt.sim import episodes

    by_family: dict[str, list[float]] = {}
    for d in eps:
        by_family.setdefault(episodes.family(d), []).append(runs[(episodes.label(d), name)]["cost"])
    return by_family


def _check(families: list[str], setting: Setting) -> None:
    """Refuse an unknown family, fleet or objective, or a slowdown that is not positive, before any run."""
    from llmvirt.sim.datacenter import FLEETS

    unknown = [f for f in families if f not in GRIDS]
    if unknown:
        raise ValueError(f"unknown family {unknown[0]!r}: use {', '.join(GRIDS)}")
    if setting.fleet not in FLEETS:
        raise ValueError(f"unknown fleet {setting.fleet!r}: use {', '.join(FLEETS)}")
    _known_objective(setting.kind)
    if not setting.migration_slowdown > 0:
        raise ValueError(f"--migration-slowdown must be above 0 (1: the simulator's speed), not "
                         f"{setting.migration_slowdown:g}")


def run_grid(eps: list[Episode], names: list[str], setting: Setting, workers: int = 2,
             progress: Callable[[int, int], None] | None = None) -> dict[tuple[str, str], dict[str, float]]:
    """Every strategy of ``names`` on every episode, ``workers`` at once: each run's summary by (day label, name)."""
    jobs = [(d, name, setting) for name in names for d in eps]
    runs: dict[tuple[str, str], dict[str, float]] = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for i, (day, name, summary) in enumerate(pool.map(_job, jobs), 1):
            runs[(day, name)] = summary
            if progress is not None:
                progress(i, len(jobs))
    return runs


def tune_cloudsim(days: list[Path | Episode], families: list[str] | None = None, workers: int = 2,
                  progress: Callable[[int, int], None] | None = None, setting: Setting = Setting()
                  ) -> dict[str, Any]:
    """Grid-search every family on ``days`` as ``setting`` says (hosts, objective, migration speed), the best point
    of each by its objective; the document written to ``policies/tuned.json`` (CloudSim's fleet, by the mean) or
    :func:`llmvirt.strategies.tuned.tuned_fleet_file`'s."""
    from llmvirt.sim import episodes

    fams = families or list(GRIDS)
    _check(fams, setting)
    fleet, kind = setting.fleet, setting.kind
    eps: list[Episode] = [str(d) if isinstance(d, Path) else d for d in days]
    names = [name for f in fams for name in GRIDS[f]]
    names += [REFERENCE] if kind == "relative-tail" and REFERENCE not in names else []
    runs = run_grid(eps, names, setting, workers, progress)
    doc: dict[str, Any] = {"scenario": "cloudsim", "date": date.today().isoformat(), "cost_weights": COST_WEIGHTS,
                           "train_days": [episodes.label(d) for d in eps], "families": {}}
    if fleet != "cloudsim":
        doc["fleet"] = fleet
    if kind != "mean":
        doc["objective"] = kind
    if kind == "relative-tail":
        doc["reference"] = REFERENCE
    if setting.migration_slowdown != 1.0:
        doc["migration_slowdown"] = setting.migration_slowdown
    for f in fams:
        grid = [point_summary(name, eps, runs, kind) for name in GRIDS[f]]
        best = min(grid, key=lambda g: g.get("objective", g["cost"]))
        doc["families"][f] = {"best": best["name"], "cost": best["cost"], "grid": grid}
    return doc
