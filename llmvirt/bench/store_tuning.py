"""Tune the consolidation baselines on an operator's own history: ``llmvirt tune --from-store``.

The store's VM samples become a usage trace in the generic format (:mod:`llmvirt.sim.store_history`: CPU from
the CPU-time counters, memory as the guest reports it), on the simulator's 5-minute grid. Each whole day is
simulated on the operator's own fleet (:mod:`llmvirt.sim.own_fleet`): the hosts as their latest scan saw them,
the VMs with their own vCPUs and memory, each day starting from where the VMs really were. The split is by time,
not by VM, because an operator's fleet is often too small to halve: with two days or more, the latest whole day
(or the latest K, ``--hold-back K``) is held back, and after the tuning the best point of every family, the
shipped default and CloudSim's untuned reference run on it. That check decides nothing; it tells the operator
whether the tuned point would have done better than the default on days it was not tuned on.

Limits: power is the generic linear model, not the hosts' own curves; hosts added or removed during the history
are taken as the latest scans list them; a VM that stopped is taken to run on at its last sample, one that
started late at its first.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from llmvirt.bench import tune
from llmvirt.errors import UsageError
from llmvirt.sim import episodes, own_fleet
from llmvirt.sim import store_history as sh
from llmvirt.sim.own_fleet import OwnFleetDay
from llmvirt.sim.store_history import fleet_hosts, iter_history_rows, vm_hosts, write_generic_csv

HISTORY_FILE = "store-history.csv"  #: the store's history, in the generic format, in the tuning's directory


def history_days(engine: Engine, directory: Path, last: int | None = None, hold: int = 1
                 ) -> tuple[list[OwnFleetDay], list[OwnFleetDay]]:
    """The store's history written to ``directory``, as (tuning days, held-back days) on the operator's own hosts:
    every whole day (of the latest ``last`` days alone, when given: only they are read), the latest ``hold`` held
    back (fewer where that would leave no day to tune on; none with one day); one clear line with less than a
    day."""
    if last is not None and last < 1:
        raise UsageError("--days must be at least 1")
    if hold < 1:
        raise UsageError("--hold-back must be at least 1")
    since = None if last is None else sh.window_start(engine, last, sh.scan_interval(engine))
    path = directory / HISTORY_FILE
    count, start, latest = write_generic_csv(iter_history_rows(engine, since), path)
    if not count:
        raise UsageError("the store holds no VM history yet: run `llmvirt scan` regularly (every 5 min from cron) "
                         "for at least a day before tuning on it")
    days = own_fleet.whole_days(path)
    if days < 1:
        hours = (latest - start) / 3600
        raise UsageError(f"the store holds {hours:.1f} h of VM history; tuning needs at least one whole day (24 h) "
                         "of scans: keep `llmvirt scan` running (every 5 min from cron) and tune later")
    hosts = tuple(own_fleet.OwnHost(*h) for h in fleet_hosts(engine))
    where = _placements(engine, {h.name: i for i, h in enumerate(hosts)}, since)
    names = own_fleet.vm_names(path)
    every = [OwnFleetDay(str(path), d, hosts, tuple(_host_at(where[n], int(start) + d * 86_400) for n in names))
             for d in range(days)]
    tuned = days - min(hold, days - 1)
    return every[:tuned], every[tuned:]


def _placements(engine: Engine, host_index: dict[str, int], since: datetime | None
                ) -> dict[str, tuple[list[float], list[int]]]:
    """Each VM's hosts over time (from ``since``, when given): the times, oldest first, of its first sample and of
    every sample on another host than the one before, and the host index from each (a VM seldom moves, so this
    is far shorter than its samples)."""
    where: dict[str, tuple[list[float], list[int]]] = {}
    for vm, ts, host in vm_hosts(engine, since):
        times, hosts = where.setdefault(vm, ([], []))
        if not hosts or hosts[-1] != host_index[host]:
            times.append(ts)
            hosts.append(host_index[host])
    return where


def _host_at(samples: tuple[list[float], list[int]], t: float) -> int:
    """The host of the VM's last sample at or before ``t`` (that of the last change at or before it), else (it
    started later) of its first."""
    times, hosts = samples
    return hosts[max(0, bisect.bisect_right(times, t) - 1)]


def check(doc: dict[str, Any], held: list[OwnFleetDay], setting: tune.Setting, workers: int = 2,
          progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Each family's best point, the shipped default and :data:`llmvirt.bench.tune.REFERENCE` on the held-back
    days (the tuning never saw them): their mean figures, and the point that scored best in the tuning."""
    best = sorted({f["best"] for f in doc["families"].values()})
    default = shipped_default()
    names = [*best, *(n for n in (default, tune.REFERENCE) if n not in best)]
    runs = tune.run_grid(list(held), names, setting, workers, progress)
    rows = [tune.point_summary(name, list(held), runs, "mean") for name in names]
    return {"days": [episodes.label(d) for d in held], "default": default, "recommended": recommended(doc),
            "runs": rows}


def shipped_default() -> str:
    """What ``rebalance --goal consolidate`` runs without --policy: the shipped policy's named tuned baseline
    (``policies/default/strategies.json``), else its learned head (``llmvirt``)."""
    from llmvirt.strategies.goal_defaults import goal_strategy

    return goal_strategy(None, "consolidate")[0]


def recommended(doc: dict[str, Any]) -> str:
    """The best family's best point by the tuning's own objective (the training days alone decide it)."""
    fams = doc["families"].values()
    return min(fams, key=lambda f: next(g.get("objective", g["cost"]) for g in f["grid"] if g["name"] == f["best"]))[
        "best"]


def held_days(check_doc: dict[str, Any]) -> str:
    """``the held-back day`` or ``the N held-back days`` (means over them), as the check's reports say it."""
    n = len(check_doc["days"])
    return "the held-back day" if n == 1 else f"the {n} held-back days"


def verdict(result: dict[str, Any]) -> str:
    """One line: how the recommended point did against the default on the held-back days (their mean cost)."""
    cost = {r["name"]: r["cost"] for r in result["runs"]}
    point, default = result["recommended"], result["default"]
    if point == _concrete(default):
        return f"the tuning chose the default itself ({point}): keep it"
    ratio = cost[point] / max(cost[default], 1e-9)
    if ratio < 1:
        return (f"on {held_days(result)} {point} cost {ratio:.3f}x the default's ({default}): run it with "
                f"`llmvirt rebalance --goal consolidate --policy baseline:{point}`")
    return (f"on {held_days(result)} {point} cost {ratio:.3f}x the default's ({default}): it did not beat the "
            "default there, so keep the default (or tune again on more days)")


def _concrete(name: str) -> str:
    """The grid point a tuned alias (``relative-tuned:FAMILY`` and the like) stands for; other names as they are."""
    from llmvirt.strategies.tuned import TUNED_SOURCES, tuned_name

    base = name.removeprefix("baseline:")
    for prefix, path in TUNED_SOURCES.items():
        if base.startswith(prefix):
            return tuned_name(base.removeprefix(prefix), path)
    return base
